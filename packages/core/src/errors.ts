// moved to @tidings/protocol; this re-export goes when the hub imports the package directly
export { ErrorCode, ERROR_MESSAGES, ALL_ERROR_CODES, RealtimeError, isRealtimeError, CloseCode, clampCloseReason } from '@tidings/protocol'
