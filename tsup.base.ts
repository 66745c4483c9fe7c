import type { Options } from 'tsup'

/** The build every package shares: ESM + CJS + .d.ts from src/, for Node 20 and browsers. */
export function packageBuild(entry: Record<string, string> = { index: 'src/index.ts' }, extra: Options = {}): Options {
  return {
    entry,
    format: ['esm', 'cjs'],
    dts: true,
    clean: true,
    sourcemap: true,
    target: 'es2022',
    tsconfig: './tsconfig.json',
    ...extra,
  }
}
