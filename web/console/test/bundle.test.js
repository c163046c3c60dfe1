// The committed bundle was built from the committed sources (run `npm run build` in
// web/console after changing them).
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { STATIC_DIR, fingerprint } from '../build_inputs.mjs';

test('the bundle in engine/api/console/static matches the sources', () => {
  const info = JSON.parse(readFileSync(join(STATIC_DIR, 'build-info.json'), 'utf8'));
  assert.equal(info.fingerprint, fingerprint(), 'sources changed since the last build: run `npm ci && npm run build` in web/console');
  for (const file of ['index.html', 'console.js', 'console.css', 'basemap.json']) {
    assert.ok(existsSync(join(STATIC_DIR, file)), file);
  }
});

test('the page loads no inline script or style (the console CSP forbids them)', () => {
  const html = readFileSync(join(STATIC_DIR, 'index.html'), 'utf8');
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/i);
  assert.doesNotMatch(html, /<style|\sstyle=|\son[a-z]+=/i);
  assert.doesNotMatch(html, /https?:\/\//i); // nothing from another origin
  const js = readFileSync(join(STATIC_DIR, 'console.js'), 'utf8');
  assert.doesNotMatch(js, /\binnerHTML\s*=\s*['"`]<[^>]*style=/); // no markup with inline styles
});
