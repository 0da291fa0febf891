/* One logger: one line per event on stderr,
 * `ts=2026-11-25T10:00:00.123Z level=warn comp=gguf msg="..."`.
 * Library layers log only at debug; runtime, server and cli log once where
 * an error is handled. */
#ifndef INFERD_LOG_H
#define INFERD_LOG_H

typedef enum inferd_log_level {
    INFERD_LOG_DEBUG = 0,
    INFERD_LOG_INFO = 1,
    INFERD_LOG_WARN = 2,
    INFERD_LOG_ERROR = 3,
    INFERD_LOG_OFF = 4,
} inferd_log_level;

/** Set the minimum level written (default INFO, or $INFERD_LOG_LEVEL:
 * debug|info|warn|error|off, read at the first log call). Thread: any. */
void inferd_log_set_level(inferd_log_level level);
inferd_log_level inferd_log_get_level(void);
/** Parse "debug|info|warn|error|off"; returns -1 if unknown. */
int inferd_log_level_parse(const char *s);

/** Write one line if @p level is enabled. @p comp is a short component name.
 * The message is quoted, with `"` and `\` and control characters escaped.
 * Thread: any (lines are written whole). */
void inferd_log(inferd_log_level level, const char *comp, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A rate limit for one kind of log line (refused connections, malformed
 * messages): at most one a second, the rest counted. Zero-initialise it;
 * static storage is fine. */
typedef struct inferd_log_limit {
    _Atomic unsigned long long last_ms;    /* monotonic ms of the last line written, 0: none */
    _Atomic unsigned long long suppressed; /* lines left out since */
} inferd_log_limit;

/** May a line of kind @p lim be written now? If so, *out_suppressed is the
 * number left out since the last one (and the count restarts). Thread:
 * any. */
int inferd_log_allow(inferd_log_limit *lim, unsigned long long *out_suppressed);

#define inferd_log_debug(comp, ...) inferd_log(INFERD_LOG_DEBUG, comp, __VA_ARGS__)
#define inferd_log_info(comp, ...) inferd_log(INFERD_LOG_INFO, comp, __VA_ARGS__)
#define inferd_log_warn(comp, ...) inferd_log(INFERD_LOG_WARN, comp, __VA_ARGS__)
#define inferd_log_error(comp, ...) inferd_log(INFERD_LOG_ERROR, comp, __VA_ARGS__)

#endif
