// What the bundle is built from, and its fingerprint: build.mjs writes it into the bundle's
// build-info.json, and test/bundle.test.js recomputes it from the sources to catch a
// source change committed without a rebuild (it needs no node_modules).
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

export const HERE = new URL('.', import.meta.url).pathname;
export const STATIC_DIR = join(HERE, '../../engine/api/console/static');

/** The files the bundle is made of, relative to web/console, sorted. */
export function inputFiles() {
  const src = readdirSync(join(HERE, 'src')).map((f) => `src/${f}`);
  return [...src, 'build.mjs', 'build_inputs.mjs', 'package.json', 'package-lock.json'].sort();
}

/** SHA-256 over the inputs' names and contents (line endings as committed). */
export function fingerprint() {
  const hash = createHash('sha256');
  for (const file of inputFiles()) {
    hash.update(`${file}\0`);
    hash.update(readFileSync(join(HERE, file)));
    hash.update('\0');
  }
  return hash.digest('hex');
}

export const rel = (path) => relative(HERE, path);
