// Interop check of jgw's AMQP codec against amqplib, a client that is not pika.
//
//   node interop.js publish  AMQP_URL QUEUE [EXCHANGE] -> prints {"block": HEX} of the property block sent
//                                                         (to EXCHANGE with routing key QUEUE when given)
//   node interop.js readback AMQP_URL QUEUE EXPECTED   -> takes one message, prints {"block": HEX, "equal": bool,
//                                                         "headers": ...}; exit status 1 when not byte-equal
//
// amqplib decodes properties into JS values, which loses the wire types, so the bytes are taken from
// the socket itself: amqplib talks to RabbitMQ through a small tap in this process that records
// both directions, and the content header frame is found in what was recorded.
//
// Security: test use only; connects to the URL given (127.0.0.1 in the tests), listens on 127.0.0.1.
'use strict';

const net = require('net');
const amqp = require('amqplib');

// Every field type amqplib can write; the Python test holds the same list with the types it expects.
const HEADERS = {
  bool_true: true,
  bool_false: false,
  int8: { '!': 'int8', value: -7 },
  uint8: { '!': 'uint8', value: 250 },
  int16: { '!': 'int16', value: -30000 },
  uint16: { '!': 'uint16', value: 65000 },
  int32: { '!': 'int32', value: -2000000000 },
  uint32: { '!': 'uint32', value: 4000000000 },
  int64: { '!': 'int64', value: 1234567890123 },
  float32: { '!': 'float', value: 1.5 },
  float64: { '!': 'double', value: 3.141592653589793 },
  decimal: { '!': 'decimal', value: { places: 2, digits: 12345 } },
  timestamp: { '!': 'timestamp', value: 1767225600 },
  string: '住民異動 jgw',
  bytes: Buffer.from([0, 1, 254, 255]),
  array: [1, 'two', true, null, { '!': 'float', value: 0.25 }, [300]],
  table: { nested: { deeper: { '!': 'uint16', value: 7 } }, list: [] },
  void: null,
  guessed_int: 70000,
  guessed_double: 0.5,
};

const PROPERTIES = {
  contentType: 'application/octet-stream',
  contentEncoding: 'identity',
  headers: HEADERS,
  deliveryMode: 2,
  priority: 3,
  correlationId: 'corr-1',
  replyTo: 'reply.queue',
  messageId: 'interop-1',
  timestamp: 1767225600,
  type: 'juki.ido',
  userId: 'guest',
  appId: 'amqplib-interop',
};

function tap(target) {
  // a loopback proxy in front of the broker that records what goes each way
  const recorded = { up: [], down: [] };
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.hostname);
    client.on('data', (d) => { recorded.up.push(d); upstream.write(d); });
    upstream.on('data', (d) => { recorded.down.push(d); client.write(d); });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, recorded, port: server.address().port }));
  });
}

function headerBlocks(chunks, skip) {
  // property blocks of every content header frame in the recorded bytes
  const buf = Buffer.concat(chunks).subarray(skip);
  const blocks = [];
  let o = 0;
  while (o + 7 <= buf.length) {
    const type = buf[o];
    const size = buf.readUInt32BE(o + 3);
    if (o + 8 + size > buf.length) break;
    if (type === 2) blocks.push(buf.subarray(o + 7 + 12, o + 7 + size));
    o += size + 8;
  }
  return blocks;
}

async function connectThroughTap(url) {
  const target = new URL(url);
  const t = await tap(target);
  const viaTap = new URL(url);
  viaTap.host = `127.0.0.1:${t.port}`;
  const conn = await amqp.connect(viaTap.toString());
  return { conn, t };
}

async function publish(url, queue, exchange) {
  const { conn, t } = await connectThroughTap(url);
  const ch = await conn.createConfirmChannel();
  await new Promise((resolve, reject) => {
    ch.publish(exchange || '', queue, Buffer.from('interop body'), PROPERTIES, (err) => (err ? reject(err) : resolve()));
  });
  await ch.close();
  await conn.close();
  t.server.close();
  const blocks = headerBlocks(t.recorded.up, 8); // after the protocol header
  if (blocks.length !== 1) throw new Error(`expected one content header, saw ${blocks.length}`);
  process.stdout.write(JSON.stringify({ block: blocks[0].toString('hex') }) + '\n');
}

function plain(value) {
  // amqplib's decoded values, made JSON-safe for the report
  if (Buffer.isBuffer(value)) return { bytes: value.toString('hex') };
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = plain(v);
    return out;
  }
  return value;
}

async function readback(url, queue, expected) {
  const { conn, t } = await connectThroughTap(url);
  const ch = await conn.createChannel();
  let msg = false;
  for (let i = 0; i < 50 && !msg; i++) {
    msg = await ch.get(queue, { noAck: true });
    if (!msg) await new Promise((r) => setTimeout(r, 100));
  }
  if (!msg) throw new Error(`no message in ${queue}`);
  await ch.close();
  await conn.close();
  t.server.close();
  const blocks = headerBlocks(t.recorded.down, 0);
  if (blocks.length !== 1) throw new Error(`expected one content header, saw ${blocks.length}`);
  const block = blocks[0].toString('hex');
  const equal = block === expected;
  const decodedOk = msg.properties.messageId === PROPERTIES.messageId
    && msg.properties.headers.string === HEADERS.string
    && msg.properties.headers.uint32 === HEADERS.uint32.value
    && msg.content.toString() === 'interop body';
  process.stdout.write(JSON.stringify({ block, equal, decodedOk, headers: plain(msg.properties.headers) }) + '\n');
  process.exitCode = equal && decodedOk ? 0 : 1;
}

async function main() {
  const [cmd, url, queue, expected] = process.argv.slice(2);
  if (cmd === 'publish') await publish(url, queue, expected);
  else if (cmd === 'readback') await readback(url, queue, expected);
  else throw new Error(`usage: interop.js publish|readback URL QUEUE [EXPECTED_HEX]`);
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exitCode = 2;
});
