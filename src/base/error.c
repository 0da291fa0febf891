/* Error table lookups and recording. Recording never allocates. */
#include "inferd/error.h"

#include <stdio.h>
#include <string.h>

#define FACE(fn, type, column, fallback) \
    type fn(int code)                    \
    {                                    \
        switch (code) {                  \
            INFERD_ERRORS(column)        \
        }                                \
        return fallback;                 \
    }

/* clang-format off */
#define COL_TEXT(name, value, http, hcode, ncode, grpc, text)  case value: return text;
#define COL_HTTP(name, value, http, hcode, ncode, grpc, text)  case value: return http;
#define COL_HCODE(name, value, http, hcode, ncode, grpc, text) case value: return hcode;
#define COL_NCODE(name, value, http, hcode, ncode, grpc, text) case value: return ncode;
#define COL_GRPC(name, value, http, hcode, ncode, grpc, text)  case value: return grpc;
/* clang-format on */

FACE(inferd_strerror, const char *, COL_TEXT, "unknown error")
FACE(inferd_error_http_status, int, COL_HTTP, 500)
FACE(inferd_error_http_code, const char *, COL_HCODE, "internal")
FACE(inferd_error_nats_code, const char *, COL_NCODE, "internal")
FACE(inferd_error_grpc_status, int, COL_GRPC, 13)

int inferd_error_from_http(int status, const char *code)
{
    /* clang-format off */
#define ROW(name, value, http, hcode, ncode, grpc, text) {value, http, hcode},
    /* clang-format on */
    static const struct {
        int value, http;
        const char *hcode;
    } rows[] = {INFERD_ERRORS(ROW)};
#undef ROW
    const size_t n = sizeof(rows) / sizeof(rows[0]);
    for (size_t i = 0; code && i < n; i++)
        if ((status == 0 || rows[i].http == status) && strcmp(rows[i].hcode, code) == 0)
            return rows[i].value;
    for (size_t i = 0; i < n; i++)
        if (rows[i].http == status && rows[i].value != INFERD_OK)
            return rows[i].value;
    return INFERD_E_INTERNAL;
}

const char *inferd_error_openai_type(int code)
{
    int status = inferd_error_http_status(code);
    if (status == 401)
        return "authentication_error";
    if (status == 404)
        return "not_found_error";
    return status >= 500 ? "server_error" : "invalid_request_error";
}

__attribute__((format(printf, 5, 0))) static int
vfail(inferd_error *err, int code, int sys_errno, const char *param, const char *fmt, va_list ap)
{
    if (err) {
        err->code = code;
        err->sys_errno = sys_errno;
        snprintf(err->param, sizeof(err->param), "%s", param ? param : "");
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    }
    return code;
}

int inferd_fail(inferd_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(err, code, 0, NULL, fmt, ap);
    va_end(ap);
    return code;
}

int inferd_fail_param(inferd_error *err, int code, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(err, code, 0, param, fmt, ap);
    va_end(ap);
    return code;
}

int inferd_vfail_param(inferd_error *err, int code, const char *param, const char *fmt, va_list ap)
{
    return vfail(err, code, 0, param, fmt, ap);
}

int inferd_fail_errno(inferd_error *err, int code, int sys_errno, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(err, code, sys_errno, NULL, fmt, ap);
    va_end(ap);
    return code;
}

void inferd_error_clear(inferd_error *err)
{
    if (err)
        memset(err, 0, sizeof(*err));
}
