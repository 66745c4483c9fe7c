// moved to @tidings/protocol; this re-export goes when the hub imports the package directly
export { createReceiver, type Receiver, type ReceiverOptions } from '@tidings/protocol'
