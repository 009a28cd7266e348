// Parse Microsoft Teams payloads with Microsoft's adaptivecards library (pinned in
// package.json / package-lock.json; installed by scripts/deps.sh) and report every problem:
//
//   node check-cards.js FILE...
//
// Each FILE is a whole Teams Workflows message: {"type": "message", "attachments": [{
// "contentType": "application/vnd.microsoft.card.adaptive", "content": <card>}]}. For each card:
// the library's parse warnings (SerializationContext events, with target version 1.5), its
// validation failures (validateProperties), and every property of the input that does not
// survive parse + toJSON unchanged (the library drops what it does not know: a typo, or an
// element or value of a later version). `msteams` (Teams' own extension) is not part of the
// library's schema and is left out of that comparison. Prints one JSON line per file
// {"file", "problems": [...]}; exits 1 when any file has a problem, 2 on bad usage.
'use strict';
const fs = require('fs');
const AC = require('adaptivecards/dist/adaptivecards.js');

const TEAMS_EXTENSIONS = new Set(['msteams']);

function leaves(value, path, out) {
  if (Array.isArray(value)) {
    value.forEach((v, i) => leaves(v, `${path}[${i}]`, out));
  } else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (path === '' && TEAMS_EXTENSIONS.has(k)) continue;
      leaves(v, path ? `${path}.${k}` : k, out);
    }
  } else {
    out.push([path, value]);
  }
  return out;
}

function at(value, path) {
  const parts = path.match(/[^.[\]]+/g) || [];
  let v = value;
  for (const p of parts) {
    if (v === null || v === undefined) return undefined;
    v = v[p];
  }
  return v;
}

function checkCard(card) {
  const problems = [];
  if (card.type !== 'AdaptiveCard') problems.push(`card type is ${JSON.stringify(card.type)}`);
  if (card.version !== '1.5') problems.push(`card version is ${JSON.stringify(card.version)}, not 1.5`);
  const ctx = new AC.SerializationContext(AC.Versions.v1_5);
  const parsed = new AC.AdaptiveCard();
  parsed.parse(card, ctx);
  for (let i = 0; i < ctx.eventCount; i++) {
    const e = ctx.getEventAt(i);
    problems.push(`parse: ${e.message}`);
  }
  const validation = parsed.validateProperties();
  for (const e of validation.validationEvents) problems.push(`validation: ${e.message}`);
  const back = parsed.toJSON(new AC.SerializationContext(AC.Versions.v1_5));
  for (const [path, value] of leaves(card, '', [])) {
    const got = at(back, path);
    if (got !== value) {
      problems.push(`${path}: ${JSON.stringify(value)} did not survive parsing (got ${JSON.stringify(got)})`);
    }
  }
  return problems;
}

function checkMessage(msg) {
  const problems = [];
  if (msg.type !== 'message') problems.push(`message type is ${JSON.stringify(msg.type)}`);
  if (!Array.isArray(msg.attachments) || msg.attachments.length !== 1) {
    problems.push('attachments must be an array of one');
    return problems;
  }
  const a = msg.attachments[0];
  if (a.contentType !== 'application/vnd.microsoft.card.adaptive') {
    problems.push(`contentType is ${JSON.stringify(a.contentType)}`);
  }
  if (a.content === null || typeof a.content !== 'object') {
    problems.push('content is not a card');
    return problems;
  }
  return problems.concat(checkCard(a.content));
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node check-cards.js FILE...');
  process.exit(2);
}
let failed = false;
for (const file of files) {
  let problems;
  try {
    problems = checkMessage(JSON.parse(fs.readFileSync(file, 'utf8')));
  } catch (e) {
    problems = [`cannot read: ${e.message}`];
  }
  if (problems.length > 0) failed = true;
  console.log(JSON.stringify({ file, problems }));
}
process.exit(failed ? 1 : 0);
