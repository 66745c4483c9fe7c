import { defineConfig } from 'tsup'
import { packageBuild } from '../../tsup.base.js'

export default defineConfig([
  packageBuild(),
  {
    // One self-contained ES module for browsers without a bundler: `<script type="module">`.
    entry: { browser: 'src/index.ts' },
    format: ['esm'],
    platform: 'browser',
    target: 'es2022',
    noExternal: ['@tidings/protocol'],
    external: ['ws'],
    minify: true,
    sourcemap: true,
    dts: false,
    clean: false,
    tsconfig: './tsconfig.json',
    esbuildOptions(options) {
      options.conditions = ['source', 'browser', 'module', 'import']
    },
  },
])
