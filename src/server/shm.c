/* The KServe v2 / Triton system shared-memory extension: region status,
 * register, unregister, and our own create (a region the worker makes for
 * the client). The regions themselves are src/tensor/region.c's; here are
 * the routes, who may use them (the Unix socket and loopback listeners by
 * default, --shm on|off) and whose quota a region counts in (the session:
 * the API key, and on the Unix socket the Inference-Session header). */
#include "server_internal.h"

#include <stdio.h>
#include <string.h>

#include "inferd/alloc.h"
#include "inferd/region.h"

#define SESSION_HEADER "Inference-Session"

bool inferd__shm_allowed(http_conn *c)
{
    inferd_server *s = c->srv;
    if (!s->regions) {
        inferd__http_error(c, INFERD_E_UNSUPPORTED, NULL,
                           "system shared memory is off on this server (--shm off)");
        return false;
    }
    if (!c->l->is_unix && !s->shm_tcp) {
        inferd__http_error(c, INFERD_E_UNSUPPORTED, NULL,
                           "system shared memory is served on the Unix socket and on loopback "
                           "addresses only (--shm on serves it on every listener)");
        return false;
    }
    return true;
}

void inferd__shm_session(http_conn *c, char out[INFERD_REGION_SESSION_MAX])
{
    inferd_server *s = c->srv;
    const http1_str *v = c->l->is_unix ? http1_header_get(c->rq->head, SESSION_HEADER) : NULL;
    inferd__kv_session(s->api_key, s->api_key_len, v ? v->p : NULL, v ? v->n : 0, out);
}

static json_t *region_json(const inferd_region_info *ri)
{
    return json_pack("{s:s,s:s,s:I,s:I,s:b,s:b,s:i,s:I}", "name", ri->name, "key", ri->key,
                     "offset", (json_int_t)ri->offset, "byte_size", (json_int_t)ri->byte_size,
                     "created", ri->created, "broken", ri->broken, "views", (int)ri->views,
                     "idle_ms", (json_int_t)ri->idle_ms);
}

void inferd__shm_status(http_conn *c, const char *r)
{
    if (!inferd__shm_allowed(c))
        return;
    inferd_server *s = c->srv;
    inferd_error e = {0};
    size_t n = 0;
    inferd_region_info one;
    if (r) {
        if (inferd_regions_status(s->regions, r, &one, 1, &n, &e) < 0) {
            inferd__http_fail(c, &e);
            return;
        }
        inferd__http_json(c, 200, json_pack("[o]", region_json(&one)));
        return;
    }
    /* All: the count first, then a buffer that fits (regions may come and
     * go in between: status again with what the table says then). */
    inferd_regions_status(s->regions, NULL, NULL, 0, &n, &e);
    inferd_region_info *all = n ? inferd_calloc(n, sizeof(*all)) : NULL;
    if (n && !all) {
        inferd__http_error(c, INFERD_E_NOMEM, NULL, "no memory for the region list");
        return;
    }
    size_t cap = n;
    inferd_regions_status(s->regions, NULL, all, cap, &n, &e);
    json_t *arr = json_array();
    for (size_t i = 0; i < n && i < cap; i++)
        json_array_append_new(arr, region_json(&all[i]));
    inferd_free(all);
    inferd__http_json(c, 200, arr);
}

/* @p key of @p body as a non-negative integer (*out stays when absent and
 * not @p required). false when answered (400). */
static bool get_size(http_conn *c, json_t *body, const char *key, bool required, uint64_t *out)
{
    json_t *v = json_object_get(body, key);
    if (!v) {
        if (required)
            inferd__http_error(c, INFERD_E_MISSING, key, "%s is required", key);
        return !required;
    }
    if (!json_is_integer(v)) {
        inferd__http_error(c, INFERD_E_INVALID_TYPE, key, "%s: expected an integer", key);
        return false;
    }
    if (json_integer_value(v) < 0) {
        inferd__http_error(c, INFERD_E_RANGE, key, "%s: %lld is negative", key,
                           (long long)json_integer_value(v));
        return false;
    }
    *out = (uint64_t)json_integer_value(v);
    return true;
}

void inferd__shm_register(http_conn *c, const char *r, json_t *body)
{
    if (!inferd__shm_allowed(c))
        return;
    json_t *key = json_object_get(body, "key");
    if (!key) {
        inferd__http_error(c, INFERD_E_MISSING, "key", "key is required");
        return;
    }
    if (!json_is_string(key)) {
        inferd__http_error(c, INFERD_E_INVALID_TYPE, "key", "key: expected a string");
        return;
    }
    uint64_t offset = 0, byte_size = 0;
    if (!get_size(c, body, "offset", false, &offset) ||
        !get_size(c, body, "byte_size", true, &byte_size))
        return;
    char session[INFERD_REGION_SESSION_MAX];
    inferd__shm_session(c, session);
    inferd_error e = {0};
    if (inferd_regions_register(c->srv->regions, r, json_string_value(key), offset, byte_size,
                                session, &e) < 0) {
        inferd__http_fail(c, &e);
        return;
    }
    inferd__http_json(c, 200, json_object());
}

void inferd__shm_create(http_conn *c, const char *r, json_t *body)
{
    if (!inferd__shm_allowed(c))
        return;
    uint64_t byte_size = 0;
    if (!get_size(c, body, "byte_size", true, &byte_size))
        return;
    char session[INFERD_REGION_SESSION_MAX];
    inferd__shm_session(c, session);
    char key[INFERD_REGION_KEY_MAX];
    inferd_error e = {0};
    if (inferd_regions_create_region(c->srv->regions, r, byte_size, session, key, &e) < 0) {
        inferd_server *s = c->srv;
        const char *reason = NULL;
        if (e.code == INFERD_E_QUOTA) {
            atomic_fetch_add(&s->shm_refused_quota, 1);
            reason = "quota";
        } else if (e.code == INFERD_E_IO && strstr(e.msg, "is full")) {
            atomic_fetch_add(&s->shm_refused_full, 1);
            reason = "full";
        } else if (e.code == INFERD_E_IO) {
            atomic_fetch_add(&s->shm_refused_unavailable, 1);
            reason = "unavailable";
        }
        if (!reason) {
            inferd__http_fail(c, &e);
            return;
        }
        /* No shared memory for this client now: its tensors go in the
         * request body (binary data), and the answer says why. */
        json_t *o = inferd_fe_error_kserve(&e);
        if (o && (json_object_set_new(o, "reason", json_string(reason)) != 0 ||
                  json_object_set_new(o, "fallback", json_string("binary_data")) != 0)) {
            json_decref(o);
            o = NULL;
        }
        inferd__http_json(c, inferd_fe_error_status(&e), o);
        return;
    }
    inferd__http_json(c, 200,
                      json_pack("{s:s,s:s,s:I,s:I}", "name", r, "key", key, "offset", (json_int_t)0,
                                "byte_size", (json_int_t)byte_size));
}

void inferd__shm_unregister(http_conn *c, const char *r)
{
    if (!inferd__shm_allowed(c))
        return;
    inferd_error e = {0};
    /* As Triton: unregistering a region that is not there is not an error. */
    if (inferd_regions_unregister(c->srv->regions, r, &e) < 0 && e.code != INFERD_E_NOT_FOUND) {
        inferd__http_fail(c, &e);
        return;
    }
    inferd__http_json(c, 200, json_object());
}
