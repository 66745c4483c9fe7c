// moved to @tidings/protocol; this re-export goes when the hub imports the package directly
export { DEFAULT_MAX_DEPTH, jsonDepth, valueDepth, decodeWithin, parseJsonWithin, peekRequestId, type Decoded } from '@tidings/protocol'
