import assert from 'node:assert/strict';
import { test } from 'node:test';

import { can, whyNot } from '../src/roles.js';

test('viewers read, operators work cases, admins redeliver', () => {
  assert.equal(can('viewer', 'case'), false);
  assert.equal(can('operator', 'case'), true);
  assert.equal(can('admin', 'case'), true);
  assert.equal(can('viewer', 'audit'), false);
  assert.equal(can('operator', 'audit'), true);
  assert.equal(can('operator', 'redeliver'), false);
  assert.equal(can('admin', 'redeliver'), true);
  assert.equal(can('operator', 'operators'), false);
});

test('unknown roles and actions admit nothing', () => {
  assert.equal(can('superuser', 'case'), false);
  assert.equal(can('admin', 'launch'), false);
});

test('a disabled control says why', () => {
  assert.equal(whyNot('viewer', 'case'), 'needs the operator role (you are viewer)');
  assert.equal(whyNot('operator', 'case'), '');
});
