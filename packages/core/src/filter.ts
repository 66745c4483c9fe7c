// moved to @tidings/protocol; this re-export goes when the hub imports the package directly
export { type FilterNode, type FilterOp, type FilterPredicate, type FilterRoots, type FilterTarget, FilterError, FILTER_LIMITS, MESSAGE_FILTER_ROOTS, RECIPIENT_FILTER_ROOTS, compileFilter, filterSchema } from '@tidings/protocol'
