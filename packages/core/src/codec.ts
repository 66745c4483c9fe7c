// moved to @tidings/protocol; this re-export goes when the hub imports the package directly
export { type Codec, type WireData, jsonCodec, jsonWithNumber, utf8Length, wireLength } from '@tidings/protocol'
