import { defineConfig } from 'tsup'

export default defineConfig([
  {
    entry: { index: 'src/index.ts' },
    format: ['esm', 'cjs'],
    dts: true,
    clean: true,
    sourcemap: true,
    target: 'es2022',
    tsconfig: './tsconfig.json',
  },
  {
    // One self-contained ES module for browsers without a bundler: `<script type="module">`.
    entry: { browser: 'src/index.ts' },
    format: ['esm'],
    platform: 'browser',
    target: 'es2022',
    noExternal: ['@tidings/core'],
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
