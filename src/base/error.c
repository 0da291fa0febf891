/* Error table lookups and recording. Recording never allocates. */
#include "inferd/error.h"

#include <stdio.h>
#include <string.h>

const char *inferd_strerror(int code)
{
    switch (code) {
#define X(name, value, http, wire, text) case value: return text;
        INFERD_ERRORS(X)
#undef X
    }
    return "unknown error";
}

int inferd_error_http_status(int code)
{
    switch (code) {
#define X(name, value, http, wire, text) case value: return http;
        INFERD_ERRORS(X)
#undef X
    }
    return 500;
}

const char *inferd_error_wire_code(int code)
{
    switch (code) {
#define X(name, value, http, wire, text) case value: return wire;
        INFERD_ERRORS(X)
#undef X
    }
    return "internal";
}

__attribute__((format(printf, 4, 0)))
static int vfail(inferd_error *err, int code, int sys_errno, const char *fmt,
                 va_list ap)
{
    if (err) {
        err->code = code;
        err->sys_errno = sys_errno;
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    }
    return code;
}

int inferd_fail(inferd_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(err, code, 0, fmt, ap);
    va_end(ap);
    return code;
}

int inferd_fail_errno(inferd_error *err, int code, int sys_errno,
                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(err, code, sys_errno, fmt, ap);
    va_end(ap);
    return code;
}

void inferd_error_clear(inferd_error *err)
{
    if (err)
        memset(err, 0, sizeof(*err));
}
