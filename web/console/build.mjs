// Build the console into engine/api/console/static/ (committed: the engine serves it with
// no Node.js at install or run time). `npm ci && npm run build` in web/console.
import { copyFileSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import * as esbuild from 'esbuild';

import { HERE, STATIC_DIR, fingerprint, rel } from './build_inputs.mjs';

const require = createRequire(import.meta.url);
const pkg = JSON.parse(readFileSync(join(HERE, 'package.json'), 'utf8'));
const versionOf = (name) => JSON.parse(readFileSync(join(HERE, 'node_modules', name, 'package.json'), 'utf8')).version;

mkdirSync(STATIC_DIR, { recursive: true });

await esbuild.build({
  entryPoints: { console: join(HERE, 'src/main.js') },
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020'],
  legalComments: 'eof',
  outdir: STATIC_DIR,
  logLevel: 'warning',
});
await esbuild.build({
  entryPoints: { console: join(HERE, 'src/console.css') },
  bundle: true,
  minify: true,
  loader: { '.png': 'dataurl', '.svg': 'dataurl' },
  outdir: STATIC_DIR,
  logLevel: 'warning',
});
copyFileSync(join(HERE, 'src/index.html'), join(STATIC_DIR, 'index.html'));
// Natural Earth 1:50m country boundaries, as TopoJSON (740 KB, against 1.7 MB as GeoJSON
// rounded to 3 decimals): the page turns them into GeoJSON with topojson-client (~30 ms).
copyFileSync(require.resolve('world-atlas/countries-50m.json'), join(STATIC_DIR, 'basemap.json'));

// The licences of what the bundle ships (all permissive: each asks its notice kept).
const BUNDLED = ['leaflet', 'supercluster', 'kdbush', 'topojson-client', 'world-atlas'];
const notices = BUNDLED.map((name) => {
  const text = readFileSync(join(HERE, 'node_modules', name, 'LICENSE'), 'utf8').trim();
  return `${name} ${versionOf(name)}\n${'='.repeat(40)}\n${text}\n`;
});
notices.push('Natural Earth (the boundaries of basemap.json, via world-atlas)\n' + `${'='.repeat(40)}\nPublic domain: https://www.naturalearthdata.com/about/terms-of-use/\n`);
writeFileSync(join(STATIC_DIR, 'THIRD_PARTY_LICENSES.txt'), notices.join('\n'));

const libraries = Object.fromEntries(Object.keys(pkg.dependencies).map((name) => [name, versionOf(name)]));
const info = { fingerprint: fingerprint(), libraries, esbuild: esbuild.version };
writeFileSync(join(STATIC_DIR, 'build-info.json'), `${JSON.stringify(info, null, 2)}\n`);

for (const file of ['index.html', 'console.js', 'console.css', 'basemap.json', 'build-info.json', 'THIRD_PARTY_LICENSES.txt']) {
  const path = join(STATIC_DIR, file);
  console.log(`${rel(path).padEnd(48)} ${(statSync(path).size / 1024).toFixed(1).padStart(8)} KiB`);
}
