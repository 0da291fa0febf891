/* inferd error table: one X-macro gives the enum, the message, the HTTP
 * status and the wire code, so the error a client sees cannot drift from
 * the code that raised it. */
#ifndef INFERD_ERROR_H
#define INFERD_ERROR_H

#include <stdarg.h>

/* name, value, HTTP status, wire code, text */
#define INFERD_ERRORS(X)                                                      \
    X(OK,            0,   200, "ok",            "success")                    \
    X(E_INVALID,    -1,   400, "bad_request",   "invalid argument")           \
    X(E_NOMEM,      -2,   500, "internal",      "out of memory")              \
    X(E_OVERLOADED, -3,   503, "overloaded",    "request queue is full")      \
    X(E_TIMEOUT,    -4,   504, "timeout",       "deadline exceeded")          \
    X(E_NOT_FOUND,  -5,   404, "not_found",     "no such model or region")    \
    X(E_IO,         -6,   500, "io_error",      "input/output error")         \
    X(E_FORMAT,     -7,   422, "bad_format",    "malformed file or message")  \
    X(E_UNSUPPORTED,-8,   501, "unsupported",   "not supported")              \
    X(E_EXISTS,     -9,   409, "exists",        "already exists")             \
    X(E_QUOTA,      -10,  507, "quota",         "quota exceeded")             \
    X(E_CANCELLED,  -11,  499, "cancelled",     "cancelled")                  \
    X(E_RANGE,      -12,  400, "out_of_range",  "value out of range")         \
    X(E_INTERNAL,   -13,  500, "internal",      "internal error")             \
    X(E_BUSY,       -14,  409, "busy",          "resource busy")              \
    X(E_UNAVAILABLE,-15,  503, "unavailable",   "not serving (loading, draining or stopped)")

enum {
#define INFERD_X_ENUM(name, value, http, wire, text) INFERD_##name = value,
    INFERD_ERRORS(INFERD_X_ENUM)
#undef INFERD_X_ENUM
};

typedef struct inferd_error {
    int  code;        /* INFERD_E_*, 0 if nothing was recorded */
    int  sys_errno;   /* errno behind an I/O error, else 0 */
    char msg[256];    /* recording an error never allocates */
} inferd_error;

/** Text of an error code ("invalid argument"); "unknown error" if unknown.
 * Thread: any. */
const char *inferd_strerror(int code);
/** HTTP status for an error code (500 if unknown). Thread: any. */
int inferd_error_http_status(int code);
/** Wire code string for an error code ("internal" if unknown). Thread: any. */
const char *inferd_error_wire_code(int code);

/**
 * Record an error in @p err (may be NULL) and return @p code, so callers can
 * write `return inferd_fail(err, INFERD_E_INVALID, "field '%s'...", f);`.
 * The message is formatted into err->msg (truncated to fit).
 * Thread: any.
 */
int inferd_fail(inferd_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Same, also recording @p sys_errno (an errno value). */
int inferd_fail_errno(inferd_error *err, int code, int sys_errno,
                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/** Clear @p err (may be NULL). */
void inferd_error_clear(inferd_error *err);

#endif
