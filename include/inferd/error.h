/* inferd error table: one X-macro gives the enum, the message, the HTTP
 * status and the wire code, so the error a client sees cannot drift from
 * the code that raised it. */
#ifndef INFERD_ERROR_H
#define INFERD_ERROR_H

#include <stdarg.h>

/* One row per error a caller or a client can receive:
 *   name, value,
 *   HTTP status, HTTP code (the OpenAI error "code"; KServe routes answer
 *   {"error": message} with the same status),
 *   NATS code (the "code" of a NATS error event or control reply),
 *   gRPC status code (google.rpc.Code),
 *   text.
 * Doors take every status and code from here (inferd_error_* below); none
 * maps codes by hand. The first rows are the runtime's; the request rows
 * (from E_INVALID_TYPE on) are raised by the request front end. */
/* clang-format off */
#define INFERD_ERRORS(X)                                                                   \
    X(OK,                  0,   200, "ok",                         "ok",          0,  "success") \
    X(E_INVALID,          -1,   400, "invalid_value",              "bad_request", 3,  "invalid argument") \
    X(E_NOMEM,            -2,   500, "internal",                   "internal",    13, "out of memory") \
    X(E_OVERLOADED,       -3,   503, "overloaded",                 "overloaded",  8,  "request queue is full") \
    X(E_TIMEOUT,          -4,   504, "timeout",                    "timeout",     4,  "deadline exceeded") \
    X(E_NOT_FOUND,        -5,   404, "not_found",                  "not_found",   5,  "no such model or region") \
    X(E_IO,               -6,   500, "io_error",                   "internal",    13, "input/output error") \
    X(E_FORMAT,           -7,   422, "bad_format",                 "bad_request", 3,  "malformed file or message") \
    X(E_UNSUPPORTED,      -8,   501, "unsupported",                "internal",    12, "not supported") \
    X(E_EXISTS,           -9,   409, "exists",                     "conflict",    6,  "already exists") \
    X(E_QUOTA,            -10,  507, "quota",                      "internal",    8,  "quota exceeded") \
    X(E_CANCELLED,        -11,  499, "cancelled",                  "cancelled",   1,  "cancelled") \
    X(E_RANGE,            -12,  400, "invalid_value",              "bad_request", 11, "value out of range") \
    X(E_INTERNAL,         -13,  500, "internal",                   "internal",    13, "internal error") \
    X(E_BUSY,             -14,  409, "busy",                       "unavailable", 10, "resource busy") \
    X(E_UNAVAILABLE,      -15,  503, "unavailable",                "unavailable", 14, "not serving (loading, draining or stopped)") \
    X(E_INVALID_TYPE,     -16,  400, "invalid_type",               "bad_request", 3,  "a field has the wrong type") \
    X(E_MISSING,          -17,  400, "missing_required_parameter", "bad_request", 3,  "a required field is missing") \
    X(E_CONTEXT_LENGTH,   -18,  400, "context_length_exceeded",    "bad_request", 3,  "the prompt does not fit the context") \
    X(E_FIELD_UNSUPPORTED,-19,  400, "unsupported",                "bad_request", 3,  "a field asks for what is not supported") \
    X(E_BAD_JSON,         -20,  400, "invalid_json",               "bad_request", 3,  "the body is not a JSON object") \
    X(E_TOO_LARGE,        -21,  413, "request_too_large",          "bad_request", 8,  "the request is too large") \
    X(E_UNAUTHORIZED,     -22,  401, "invalid_api_key",            "unauthorized",16, "missing or wrong API key") \
    X(E_MODEL_NOT_FOUND,  -23,  404, "model_not_found",            "not_found",   5,  "no such model") \
    X(E_METHOD,           -24,  405, "method_not_allowed",         "bad_request", 12, "method not allowed") \
    X(E_NO_ROUTE,         -25,  404, "not_found",                  "not_found",   12, "no such route") \
    X(E_TRANSPORT,        -26,  502, "transport_error",            "unavailable", 14, "no answer from the worker (connection refused, broken or timed out)")

/* clang-format on */

#define INFERD_ERROR_PARAM_MAX 48

enum {
#define INFERD_X_ENUM(name, value, http, hcode, ncode, grpc, text) INFERD_##name = value,
    INFERD_ERRORS(INFERD_X_ENUM)
#undef INFERD_X_ENUM
};

typedef struct inferd_error {
    int code;                           /* INFERD_E_*, 0 if nothing was recorded */
    int sys_errno;                      /* errno behind an I/O error, else 0 */
    char param[INFERD_ERROR_PARAM_MAX]; /* the request field at fault (its
                       * canonical name, see frontend.h), or "" */
    char msg[256];                      /* recording an error never allocates */
} inferd_error;

/** Text of an error code ("invalid argument"); "unknown error" if unknown.
 * Thread: any. */
const char *inferd_strerror(int code);
/** HTTP status for an error code (500 if unknown). Thread: any. */
int inferd_error_http_status(int code);
/** HTTP (OpenAI) code string for an error code ("internal" if unknown). */
const char *inferd_error_http_code(int code);
/** The OpenAI error "type" of an error code: authentication_error (401),
 * not_found_error (404), server_error (5xx), invalid_request_error. */
const char *inferd_error_openai_type(int code);
/** The error code a worker meant by HTTP @p status and its wire @p code
 * (the OpenAI error "code"; NULL for a KServe answer, which has none): the
 * first row of the table with both, else the first with the status, else
 * INFERD_E_INTERNAL. @p status 0: any status (an error event inside a
 * stream, whose status was 200). For clients. Thread: any. */
int inferd_error_from_http(int status, const char *code);
/** NATS code string for an error code ("internal" if unknown). */
const char *inferd_error_nats_code(int code);
/** gRPC status code (google.rpc.Code) for an error code (13 if unknown). */
int inferd_error_grpc_status(int code);

/**
 * Record an error in @p err (may be NULL) and return @p code, so callers can
 * write `return inferd_fail(err, INFERD_E_INVALID, "field '%s'...", f);`.
 * The message is formatted into err->msg (truncated to fit).
 * Thread: any.
 */
int inferd_fail(inferd_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** Same, naming the request field at fault (@p param: a canonical field
 * name, copied, truncated to fit; NULL for none). */
int inferd_fail_param(inferd_error *err, int code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/** inferd_fail_param with a va_list. */
int inferd_vfail_param(inferd_error *err, int code, const char *param, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
/** Same, also recording @p sys_errno (an errno value). */
int inferd_fail_errno(inferd_error *err, int code, int sys_errno, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/** Clear @p err (may be NULL). */
void inferd_error_clear(inferd_error *err);

#endif
