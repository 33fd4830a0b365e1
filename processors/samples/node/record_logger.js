#!/usr/bin/env node
/*
 * A record processor for the official aws-kcl npm package, run unchanged by kcl-daemon.
 *
 * Appends one line per record to the file named by KCL_SAMPLE_OUTPUT:
 *   shardId <TAB> sequenceNumber <TAB> subSequenceNumber <TAB> partitionKey <TAB> data (base64)
 * flushes it (appendFileSync), then checkpoints after each batch, so a line on disk
 * always precedes the checkpoint that covers it. Logs go to stderr: stdout is the protocol.
 *
 *   npm install aws-kcl            (tests: tests/node/node_modules, found through NODE_PATH)
 *   executableName = node processors/samples/node/record_logger.js
 */
'use strict';

const fs = require('fs');
const kcl = require('aws-kcl');

const output = process.env.KCL_SAMPLE_OUTPUT;
let shardId = null;

function log(message) {
  process.stderr.write(`record_logger.js[${shardId}]: ${message}\n`);
}

function finish(checkpointer, sequenceNumber, completeCallback) {
  checkpointer.checkpoint(sequenceNumber, function (err) {
    if (err) {
      log(`checkpoint at ${sequenceNumber} failed: ${err}`);
    }
    completeCallback();
  });
}

const recordProcessor = {
  initialize: function (input, completeCallback) {
    shardId = input.shardId;
    log(`initialized at ${input.sequenceNumber}`);
    completeCallback();
  },

  processRecords: function (input, completeCallback) {
    const records = input.records || [];
    if (records.length === 0) {
      completeCallback();
      return;
    }
    const lines = records.map(function (record) {
      const sub = record.subSequenceNumber || 0;
      return [shardId, record.sequenceNumber, sub, record.partitionKey, record.data].join('\t') + '\n';
    });
    if (output) {
      fs.appendFileSync(output, lines.join(''));
    }
    finish(input.checkpointer, records[records.length - 1].sequenceNumber, completeCallback);
  },

  leaseLost: function (input, completeCallback) {
    log('lease lost');
    completeCallback();
  },

  shardEnded: function (input, completeCallback) {
    log('shard ended');
    finish(input.checkpointer, null, completeCallback);
  },

  shutdownRequested: function (input, completeCallback) {
    log('shutdown requested');
    finish(input.checkpointer, null, completeCallback);
  },
};

kcl(recordProcessor).run();
