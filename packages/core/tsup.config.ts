import { packageBuild } from '../../tsup.base.js'

export default packageBuild({ index: 'src/index.ts', 'testing/index': 'src/testing/index.ts', 'conformance/index': 'src/conformance/index.ts' }, { external: ['vitest'] })
