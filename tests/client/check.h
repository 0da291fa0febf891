/* The client check programs' helpers: fail with a message (naming what is
 * being checked, g_where), CHECK, and required environment variables. */
#ifndef INFERD_TESTS_CLIENT_CHECK_H
#define INFERD_TESTS_CLIENT_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static const char *g_where = ""; /* printed after FAIL when set */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, g_where[0] ? "FAIL (%s): " : "FAIL: %s", g_where);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

#define CHECK(cond, ...)       \
    do {                       \
        if (!(cond))           \
            fail(__VA_ARGS__); \
    } while (0)

static const char *env(const char *name)
{
    const char *v = getenv(name);
    if (!v)
        fail("environment: %s is not set", name);
    return v;
}

#endif
