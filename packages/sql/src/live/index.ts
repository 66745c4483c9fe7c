export { type LiveCollection, type LiveRowRule, checkQuery, compileQuery, defaultDoc, sortOf } from './compile.js'
export { LIVE_NOTIFY_CHANNEL, type LiveQueries, type LiveQueriesOptions, type LiveQueriesStats, type LiveRowChange, createLiveQueries } from './provider.js'
