// The gRPC door (include/inferd/grpcd.h): inference.GRPCInferenceService
// on gRPC's callback API. This unit only translates: protobuf messages into
// the KServe v2 JSON shape (tensors as binary data beside it) that the
// server layer's KServe core takes (src/server/kvrun.h), and its answers
// back into protobuf. No gRPC thread waits on a request: ModelInfer and
// ModelStreamInfer are reactors that the kv pump's threads complete.
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_callback.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "grpc_service.grpc.pb.h"

extern "C" {
#include <jansson.h>

#include "inferd/alloc.h"
#include "inferd/dtype.h"
#include "inferd/error.h"
#include "inferd/grpcd.h"

#include "inferd/region.h"
#include "kvrun.h"
}

namespace pb = inference;
using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;
using grpc::Status;
using grpc::StatusCode;

namespace
{

const char *const COMP = "grpc";
const char *const SEE = "RepositoryIndex";

Status status_of(const inferd_error &e)
{
    return Status(static_cast<StatusCode>(inferd_error_grpc_status(e.code)), e.msg);
}

Status fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
Status fail(int code, const char *fmt, ...)
{
    inferd_error e{};
    va_list ap;
    va_start(ap, fmt);
    inferd_vfail_param(&e, code, nullptr, fmt, ap);
    va_end(ap);
    return status_of(e);
}

// Record an error in @p e: return its code (< 0).
int failed(inferd_error *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int failed(inferd_error *e, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    inferd_vfail_param(e, code, nullptr, fmt, ap);
    va_end(ap);
    return code;
}

// A JSON value we own (json_decref at scope end).
struct Json {
    json_t *v = nullptr;
    Json() = default;
    explicit Json(json_t *x) : v(x) {}
    Json(const Json &) = delete;
    Json &operator=(const Json &) = delete;
    ~Json() { json_decref(v); }
};

// ---- parameters ----

json_t *param_json(const pb::InferParameter &p)
{
    switch (p.parameter_choice_case()) {
    case pb::InferParameter::kBoolParam: return json_boolean(p.bool_param());
    case pb::InferParameter::kInt64Param: return json_integer(p.int64_param());
    case pb::InferParameter::kStringParam:
        return json_stringn(p.string_param().data(), p.string_param().size());
    case pb::InferParameter::kDoubleParam: return json_real(p.double_param());
    case pb::InferParameter::kUint64Param:
        if (p.uint64_param() > (uint64_t)INT64_MAX)
            return nullptr;
        return json_integer((json_int_t)p.uint64_param());
    default: return json_null();
    }
}

// Parameters @p m as a JSON object; a value that cannot be one fails.
int params_json(const google::protobuf::Map<std::string, pb::InferParameter> &m, const char *what,
                json_t *into, inferd_error *e)
{
    for (const auto &kv : m) {
        json_t *v = param_json(kv.second);
        if (!v)
            return failed(e, INFERD_E_INVALID,
                          "%s parameter '%s': not valid UTF-8, or out of range", what,
                          kv.first.c_str());
        json_object_setn_new_nocheck(into, kv.first.data(), kv.first.size(), v);
    }
    return 0;
}

void params_pb(json_t *obj, google::protobuf::Map<std::string, pb::InferParameter> *m,
               const char *skip = nullptr)
{
    const char *k;
    json_t *v;
    json_object_foreach (obj, k, v) {
        if (skip && strcmp(k, skip) == 0)
            continue;
        pb::InferParameter p;
        if (json_is_boolean(v))
            p.set_bool_param(json_is_true(v));
        else if (json_is_integer(v))
            p.set_int64_param(json_integer_value(v));
        else if (json_is_real(v))
            p.set_double_param(json_real_value(v));
        else if (json_is_string(v))
            p.set_string_param(std::string(json_string_value(v), json_string_length(v)));
        else
            continue;
        (*m)[k] = p;
    }
}

// ---- requests: protobuf -> KServe JSON and binary data ----

bool has_shm(const google::protobuf::Map<std::string, pb::InferParameter> &m)
{
    return m.count("shared_memory_region") > 0;
}

template <typename T> void put(std::string *bin, T v) { bin->append((const char *)&v, sizeof(v)); }

// Input @p t's typed contents, encoded as raw bytes into @p bin.
int encode_contents(const pb::ModelInferRequest::InferInputTensor &t, std::string *bin,
                    inferd_error *e)
{
    const pb::InferTensorContents &c = t.contents();
    const std::string &dt = t.datatype();
    const char *name = t.name().c_str();
    // Which field the datatype's elements are in, and how many were given.
    struct Use {
        const char *field;
        int n;
    };
    Use use{nullptr, 0};
    const int64_t lo8 = INT8_MIN, hi8 = INT8_MAX, lo16 = INT16_MIN, hi16 = INT16_MAX;
    if (dt == "BOOL") {
        use = {"bool_contents", c.bool_contents_size()};
        for (bool b : c.bool_contents())
            put<uint8_t>(bin, b ? 1 : 0);
    } else if (dt == "INT8" || dt == "INT16" || dt == "INT32") {
        use = {"int_contents", c.int_contents_size()};
        const bool i8 = dt == "INT8", i16 = dt == "INT16";
        for (int i = 0; i < c.int_contents_size(); i++) {
            const int32_t v = c.int_contents(i);
            if ((i8 && (v < lo8 || v > hi8)) || (i16 && (v < lo16 || v > hi16)))
                return failed(e, INFERD_E_RANGE,
                              "input '%s': element %d, %d, is out of range for %s", name, i, v,
                              dt.c_str());
            if (i8)
                put<int8_t>(bin, (int8_t)v);
            else if (i16)
                put<int16_t>(bin, (int16_t)v);
            else
                put<int32_t>(bin, v);
        }
    } else if (dt == "INT64") {
        use = {"int64_contents", c.int64_contents_size()};
        for (int64_t v : c.int64_contents())
            put<int64_t>(bin, v);
    } else if (dt == "UINT8" || dt == "UINT16" || dt == "UINT32") {
        use = {"uint_contents", c.uint_contents_size()};
        const bool u8 = dt == "UINT8", u16 = dt == "UINT16";
        for (int i = 0; i < c.uint_contents_size(); i++) {
            const uint32_t v = c.uint_contents(i);
            if ((u8 && v > UINT8_MAX) || (u16 && v > UINT16_MAX))
                return failed(e, INFERD_E_RANGE,
                              "input '%s': element %d, %u, is out of range for %s", name, i, v,
                              dt.c_str());
            if (u8)
                put<uint8_t>(bin, (uint8_t)v);
            else if (u16)
                put<uint16_t>(bin, (uint16_t)v);
            else
                put<uint32_t>(bin, v);
        }
    } else if (dt == "UINT64") {
        use = {"uint64_contents", c.uint64_contents_size()};
        for (uint64_t v : c.uint64_contents())
            put<uint64_t>(bin, v);
    } else if (dt == "FP32") {
        use = {"fp32_contents", c.fp32_contents_size()};
        for (float v : c.fp32_contents())
            put<float>(bin, v);
    } else if (dt == "FP64") {
        use = {"fp64_contents", c.fp64_contents_size()};
        for (double v : c.fp64_contents())
            put<double>(bin, v);
    } else if (dt == "BYTES") {
        use = {"bytes_contents", c.bytes_contents_size()};
        for (const std::string &s : c.bytes_contents()) {
            if (s.size() > UINT32_MAX)
                return failed(e, INFERD_E_RANGE, "input '%s': an element over 4 GiB", name);
            put<uint32_t>(bin, (uint32_t)s.size());
            bin->append(s);
        }
    } else if (dt == "FP16" || dt == "BF16") {
        return failed(e, INFERD_E_INVALID,
                      "input '%s': %s elements have no contents field: send them in "
                      "raw_input_contents",
                      name, dt.c_str());
    } else {
        return failed(e, INFERD_E_INVALID, "input '%s': unknown datatype '%s'", name, dt.c_str());
    }
    // Elements in a field other than the datatype's are an error, not ignored.
    const int total = c.bool_contents_size() + c.int_contents_size() + c.int64_contents_size() +
                      c.uint_contents_size() + c.uint64_contents_size() + c.fp32_contents_size() +
                      c.fp64_contents_size() + c.bytes_contents_size();
    if (total != use.n)
        return failed(e, INFERD_E_INVALID, "input '%s': datatype %s takes its elements in %s only",
                      name, dt.c_str(), use.field);
    int64_t numel = 1;
    for (int64_t d : t.shape())
        numel = d < 0 ? -1 : numel * d;
    if (numel >= 0 && numel != use.n)
        return failed(e, INFERD_E_INVALID, "input '%s': its shape holds %lld elements; %s gives %d",
                      name, (long long)numel, use.field, use.n);
    return 0;
}

// Request @p q as a KServe v2 request object (*body) and its tensors'
// bytes (@p bin), for the KServe core.
int request_json(const pb::ModelInferRequest &q, json_t **body, std::string *bin, inferd_error *e)
{
    Json b(json_object()), params(json_object()), inputs(json_array()), outputs(json_array());
    if (!b.v || !params.v || !inputs.v || !outputs.v)
        return failed(e, INFERD_E_NOMEM, "no memory for the request");
    if (!q.id().empty())
        json_object_set_new(b.v, "id", json_stringn(q.id().data(), q.id().size()));
    int rc = params_json(q.parameters(), "request", params.v, e);
    if (rc < 0)
        return rc;
    json_object_set_new(params.v, "binary_data_output", json_true());
    const int n_raw = q.raw_input_contents_size();
    if (n_raw > 0 && n_raw != q.inputs_size())
        return failed(e, INFERD_E_INVALID,
                      "raw_input_contents has %d entries for %d inputs: give one per input, in "
                      "their order (empty for an input in shared memory)",
                      n_raw, q.inputs_size());
    for (int i = 0; i < q.inputs_size(); i++) {
        const auto &t = q.inputs(i);
        Json in(json_object()), shape(json_array()), ip(json_object());
        for (int64_t d : t.shape())
            json_array_append_new(shape.v, json_integer(d));
        json_t *name = json_stringn(t.name().data(), t.name().size());
        json_t *dtype = json_stringn(t.datatype().data(), t.datatype().size());
        if (!name || !dtype) {
            json_decref(name);
            json_decref(dtype);
            return failed(e, INFERD_E_INVALID, "input %d: its name and datatype must be UTF-8", i);
        }
        json_object_set_new(in.v, "name", name);
        json_object_set_new(in.v, "datatype", dtype);
        json_object_set(in.v, "shape", shape.v);
        if ((rc = params_json(t.parameters(), "input", ip.v, e)) < 0)
            return rc;
        json_object_del(ip.v, "binary_data_size"); /* ours to set */
        const bool shm = has_shm(t.parameters());
        const bool contents = t.has_contents() && t.contents().ByteSizeLong() > 0;
        if (shm && (contents || (n_raw > 0 && !q.raw_input_contents(i).empty())))
            return failed(e, INFERD_E_INVALID,
                          "input '%s': it is in shared memory: it may not have contents too",
                          t.name().c_str());
        if (!shm) {
            const size_t at = bin->size();
            if (n_raw > 0) {
                if (contents)
                    return failed(e, INFERD_E_INVALID,
                                  "input '%s': give raw_input_contents or contents, not both",
                                  t.name().c_str());
                bin->append(q.raw_input_contents(i));
            } else if ((rc = encode_contents(t, bin, e)) < 0) {
                return rc;
            }
            json_object_set_new(ip.v, "binary_data_size",
                                json_integer((json_int_t)(bin->size() - at)));
        }
        json_object_set(in.v, "parameters", ip.v);
        json_array_append(inputs.v, in.v);
    }
    for (int i = 0; i < q.outputs_size(); i++) {
        const auto &o = q.outputs(i);
        Json out(json_object()), op(json_object());
        json_t *name = json_stringn(o.name().data(), o.name().size());
        if (!name)
            return failed(e, INFERD_E_INVALID, "output %d: its name must be UTF-8", i);
        json_object_set_new(out.v, "name", name);
        if ((rc = params_json(o.parameters(), "output", op.v, e)) < 0)
            return rc;
        json_object_set_new(op.v, "binary_data", json_true());
        json_object_set(out.v, "parameters", op.v);
        json_array_append(outputs.v, out.v);
    }
    json_object_set(b.v, "parameters", params.v);
    json_object_set(b.v, "inputs", inputs.v);
    if (q.outputs_size() > 0)
        json_object_set(b.v, "outputs", outputs.v);
    *body = b.v;
    b.v = nullptr;
    return 0;
}

// ---- responses: the KServe core's JSON and binary data -> protobuf ----

int response_pb(json_t *resp, const char *bin, size_t bin_len, const std::string &id,
                pb::ModelInferResponse *out, inferd_error *e)
{
    out->set_model_name(json_string_value(json_object_get(resp, "model_name")));
    out->set_model_version("1");
    out->set_id(id);
    params_pb(json_object_get(resp, "parameters"), out->mutable_parameters());
    size_t at = 0;
    size_t i;
    json_t *o;
    json_array_foreach (json_object_get(resp, "outputs"), i, o) {
        auto *t = out->add_outputs();
        t->set_name(json_string_value(json_object_get(o, "name")));
        t->set_datatype(json_string_value(json_object_get(o, "datatype")));
        size_t d;
        json_t *v;
        json_array_foreach (json_object_get(o, "shape"), d, v)
            t->add_shape(json_integer_value(v));
        json_t *p = json_object_get(o, "parameters");
        json_t *size = json_object_get(p, "binary_data_size");
        params_pb(p, t->mutable_parameters(), "binary_data_size");
        if (!size) { /* in shared memory: an empty entry keeps the order */
            out->add_raw_output_contents();
            continue;
        }
        const size_t n = (size_t)json_integer_value(size);
        if (n > bin_len - at)
            return failed(e, INFERD_E_INTERNAL, "output '%s': its bytes are missing",
                          t->name().c_str());
        out->add_raw_output_contents(bin + at, n);
        at += n;
    }
    return 0;
}

// inferd serves one version of each model, "1".
int check_version(const std::string &v, inferd_error *e)
{
    if (v.empty() || v == "1")
        return 0;
    return failed(e, INFERD_E_MODEL_NOT_FOUND, "version '%s': inferd serves version 1 only",
                  v.c_str());
}

// ---- messages on the wire ----

// The calls take their messages as bytes (gRPC's raw callback API) and
// parse them here, so that a message that is not one gets a precise
// INVALID_ARGUMENT (gRPC's own parse failure answers UNIMPLEMENTED, with
// no message, and ends a stream's reads as if the client had closed them).
template <class M> Status parse(const grpc::ByteBuffer *in, M *msg)
{
    grpc::ByteBuffer copy(*in); /* shares the slices: no bytes copied */
    if (grpc::SerializationTraits<M>::Deserialize(&copy, msg).ok())
        return Status::OK;
    return fail(INFERD_E_INVALID, "the message is not a valid %s",
                M::descriptor()->full_name().c_str());
}

template <class M> Status serialize(const M &msg, grpc::ByteBuffer *out)
{
    bool own = false;
    Status st = grpc::SerializationTraits<M>::Serialize(msg, out, &own);
    return st.ok() ? st : fail(INFERD_E_INTERNAL, "cannot serialize the response");
}

// ---- the door ----

} // namespace

struct inferd_grpc {
    inferd_frontend *fe = nullptr;
    inferd_grpc_opts o{};
    std::string host, unix_path, api_key;
    std::vector<std::string> identity;
    std::vector<char *> identity_c;
    inferd_shm_caps caps{};
    kv_pump *pump = nullptr;
    std::unique_ptr<grpc::Server> server;
    std::unique_ptr<grpc::Service> service;
    int port = 0;
    bool drained = false;
    std::atomic<uint32_t> calls{0}; /* running now, counted ones */
    /* For /v1/status: */
    std::atomic<uint64_t> calls_total{0}, calls_refused{0}, stream_requests{0};
    std::atomic<uint32_t> streams{0};
    bool status_set = false;
};

namespace
{

// What a call is served: the door's KServe environment, with shared memory
// only where its rule allows (the Unix socket; TCP with shm_tcp).
kv_env env_for(const inferd_grpc *g, const CallbackServerContext *ctx)
{
    const bool is_unix = ctx->peer().rfind("unix:", 0) == 0;
    kv_env env{};
    env.fe = g->fe;
    env.regions = g->o.regions && (is_unix || g->o.shm_tcp) ? g->o.regions : nullptr;
    env.shm_caps = &g->caps;
    env.identity = g->identity_c.data();
    env.n_identity = g->identity_c.size();
    return env;
}

// Compare in time independent of where they differ.
bool same(const std::string &a, const char *b, size_t bn)
{
    if (a.size() != bn)
        return false;
    unsigned char x = 0;
    for (size_t i = 0; i < bn; i++)
        x |= (unsigned char)(a[i] ^ b[i]);
    return x == 0;
}

Status check_key(const inferd_grpc *g, const CallbackServerContext *ctx)
{
    if (g->api_key.empty())
        return Status::OK;
    const auto &md = ctx->client_metadata();
    auto it = md.find("authorization");
    if (it == md.end())
        return fail(INFERD_E_UNAUTHORIZED,
                    "missing API key: send metadata 'authorization: Bearer KEY'");
    const std::string want = "Bearer " + g->api_key;
    if (!same(want, it->second.data(), it->second.size()))
        return fail(INFERD_E_UNAUTHORIZED, "wrong API key");
    return Status::OK;
}

ServerUnaryReactor *answer(CallbackServerContext *ctx, const Status &st)
{
    ServerUnaryReactor *r = ctx->DefaultReactor();
    r->Finish(st);
    return r;
}

// The session a region registered by this call counts in, as the HTTP
// door names it: the API key's, and on the Unix socket the metadata
// inference-session's.
void session_of(const inferd_grpc *g, const CallbackServerContext *ctx,
                char out[INFERD_REGION_SESSION_MAX])
{
    const char *sub = nullptr;
    size_t sub_len = 0;
    if (ctx->peer().rfind("unix:", 0) == 0) {
        const auto &md = ctx->client_metadata();
        auto it = md.find("inference-session");
        if (it != md.end()) {
            sub = it->second.data();
            sub_len = it->second.size();
        }
    }
    inferd__kv_session(g->api_key.empty() ? nullptr : g->api_key.data(), g->api_key.size(), sub,
                       sub_len, out);
}

// Set the request's timeout from the call's deadline, unless it gives one.
void deadline_param(const CallbackServerContext *ctx, json_t *body)
{
    const auto dl = ctx->deadline();
    if (dl == std::chrono::system_clock::time_point::max())
        return;
    json_t *params = json_object_get(body, "parameters");
    if (!json_is_object(params) || json_object_get(params, "timeout_ms"))
        return;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(dl - std::chrono::system_clock::now())
            .count();
    json_object_set_new(params, "timeout_ms", json_integer(left > 1 ? (json_int_t)left : 1));
}

// A call counted against max_calls while it lives.
struct Counted {
    inferd_grpc *g;
    bool held = false;
    explicit Counted(inferd_grpc *door) : g(door) {}
    bool take()
    {
        uint32_t n = g->calls.fetch_add(1) + 1;
        held = true;
        g->calls_total.fetch_add(1);
        if (n <= g->o.max_calls)
            return true;
        g->calls_refused.fetch_add(1);
        return false;
    }
    ~Counted()
    {
        if (held)
            g->calls.fetch_sub(1);
    }
};

// ---- ModelInfer ----

class InferCall final : public ServerUnaryReactor
{
  public:
    InferCall(inferd_grpc *g, grpc::ByteBuffer *out) : count_(g), out_(out) {}

    void start(CallbackServerContext *ctx, const grpc::ByteBuffer *in)
    {
        inferd_grpc *g = count_.g;
        pb::ModelInferRequest req;
        const pb::ModelInferRequest *q = &req;
        Status st = check_key(g, ctx);
        if (st.ok())
            st = parse(in, &req);
        inferd_error ve{};
        if (st.ok() && check_version(req.model_version(), &ve) < 0)
            st = status_of(ve);
        if (st.ok() && !count_.take())
            st = fail(INFERD_E_OVERLOADED, "too many calls at once (%u): retry later",
                      g->o.max_calls);
        json_t *body = nullptr;
        std::string bin;
        inferd_error re{};
        if (st.ok() && request_json(*q, &body, &bin, &re) < 0)
            st = status_of(re);
        if (!st.ok()) {
            Finish(st);
            return;
        }
        Json b(body);
        deadline_param(ctx, body);
        id_ = q->id();
        const kv_env env = env_for(g, ctx);
        static const kv_run_cbs cbs = {nullptr, &InferCall::on_done};
        inferd_error e{};
        std::unique_lock<std::mutex> lk(mu_); /* OnDone waits until run_ is set */
        if (inferd__kv_start(g->pump, &env, q->model_name().c_str(), body, bin.data(), bin.size(),
                             false, &cbs, this, &run_, &e) < 0) {
            lk.unlock();
            Finish(status_of(e));
        }
    }

    void OnCancel() override
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (run_)
            inferd__kv_cancel(run_);
    }

    void OnDone() override
    {
        kv_run *run;
        {
            std::lock_guard<std::mutex> lk(mu_);
            run = run_;
        }
        inferd__kv_release(run);
        delete this;
    }

  private:
    static void on_done(void *ctx, json_t *resp, const char *bin, size_t bin_len,
                        const inferd_error *err)
    {
        auto *c = static_cast<InferCall *>(ctx);
        inferd_error e{};
        pb::ModelInferResponse r;
        if (err)
            e = *err;
        else
            response_pb(resp, bin, bin_len, c->id_, &r, &e);
        Status st = e.code ? status_of(e) : serialize(r, c->out_);
        c->Finish(st);
    }

    Counted count_;
    grpc::ByteBuffer *out_;
    std::string id_;
    std::mutex mu_;
    kv_run *run_ = nullptr;
};

// ---- ModelStreamInfer ----

class StreamCall final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>
{
  public:
    StreamCall(inferd_grpc *g, CallbackServerContext *ctx) : count_(g), ctx_(ctx)
    {
        g->streams.fetch_add(1);
        Status st = check_key(g, ctx);
        if (st.ok() && !count_.take())
            st = fail(INFERD_E_OVERLOADED, "too many calls at once (%u): retry later",
                      g->o.max_calls);
        if (!st.ok()) {
            finishing_ = true;
            Finish(st);
            return;
        }
        StartRead(&rbuf_);
    }

    // The reactions: each decides under mu_ and finishes the call, if it
    // is over, after letting go of mu_ (Finish may end in OnDone, which
    // deletes the call): nothing of the call is touched after finish_if_over.

    void OnReadDone(bool ok) override
    {
        std::unique_lock<std::mutex> lk(mu_);
        reap_locked();
        if (!ok) { /* the client's writes ended (or the call was cancelled) */
            reading_ = false;
            finish_if_over(lk);
            return;
        }
        lk.unlock();
        start_request();
        lk.lock();
        if (!finishing_ && !broken_) {
            StartRead(&rbuf_);
            return;
        }
        reading_ = false;
        finish_if_over(lk);
    }

    void OnWriteDone(bool ok) override
    {
        std::unique_lock<std::mutex> lk(mu_);
        writing_ = false;
        queue_.pop_front(); /* the response written (kept until now, see break_locked) */
        reap_locked();
        if (!ok) /* the client is gone */
            break_locked();
        else
            write_next_locked();
        finish_if_over(lk);
    }

    void OnCancel() override
    {
        std::unique_lock<std::mutex> lk(mu_);
        break_locked();
        finish_if_over(lk);
    }

    void OnDone() override
    {
        std::vector<kv_run *> runs;
        {
            std::lock_guard<std::mutex> lk(mu_);
            for (auto &q : reqs_)
                runs.push_back(q->run);
            for (auto &q : ended_)
                runs.push_back(q->run);
        }
        for (kv_run *r : runs)
            inferd__kv_release(r);
        count_.g->streams.fetch_sub(1);
        delete this;
    }

  private:
    struct Req {
        StreamCall *s;
        kv_run *run = nullptr;
        std::string id, model;
        bool ids = false, text = true; // which outputs each token's response carries
        bool ended = false;
    };

    // A response for @p q: its id, model and version set.
    pb::ModelStreamInferResponse make(const Req &q)
    {
        pb::ModelStreamInferResponse m;
        auto *r = m.mutable_infer_response();
        r->set_id(q.id);
        r->set_model_name(q.model);
        r->set_model_version("1");
        return m;
    }

    // The error response of @p q (its last, ending @p ends when given).
    void error_response(const Req &q, const inferd_error &e, Req *ends = nullptr)
    {
        pb::ModelStreamInferResponse m = make(q);
        m.set_error_message(e.msg);
        auto &p = *m.mutable_infer_response()->mutable_parameters();
        p["error_code"].set_string_param(inferd_error_nats_code(e.code));
        p["grpc_code"].set_int64_param(inferd_error_grpc_status(e.code));
        p["triton_final_response"].set_bool_param(true);
        push(std::move(m), ends);
    }

    void start_request()
    {
        auto q = std::make_unique<Req>();
        q->s = this;
        count_.g->stream_requests.fetch_add(1);
        req_.Clear();
        const Status ps = parse(&rbuf_, &req_);
        if (!ps.ok()) {
            inferd_error pe{};
            inferd_fail(&pe, INFERD_E_INVALID, "%s", ps.error_message().c_str());
            error_response(*q, pe);
            return;
        }
        q->id = req_.id();
        q->model = req_.model_name();
        for (const auto &o : req_.outputs()) {
            if (o.name() == "output_ids")
                q->ids = true;
        }
        if (req_.outputs_size() > 0) {
            q->text = false;
            for (const auto &o : req_.outputs())
                q->text = q->text || o.name() == "text_output";
        } else {
            for (const auto &in : req_.inputs())
                q->ids = q->ids || in.name() == "input_ids";
        }
        inferd_grpc *g = count_.g;
        json_t *body = nullptr;
        std::string bin;
        inferd_error e{};
        int rc = check_version(req_.model_version(), &e);
        if (rc == 0)
            rc = request_json(req_, &body, &bin, &e);
        Json b(body);
        {
            std::lock_guard<std::mutex> lk(mu_);
            if (rc == 0 && reqs_.size() >= g->o.max_stream_requests)
                rc = failed(&e, INFERD_E_OVERLOADED,
                            "too many requests running on this stream (%u): wait for one to end",
                            g->o.max_stream_requests);
        }
        if (rc < 0) {
            error_response(*q, e);
            return;
        }
        deadline_param(ctx_, body);
        const kv_env env = env_for(g, ctx_);
        static const kv_run_cbs cbs = {&StreamCall::on_token, &StreamCall::on_done};
        Req *qp = q.get();
        std::lock_guard<std::mutex> lk(mu_);
        if (inferd__kv_start(g->pump, &env, qp->model.c_str(), body, bin.data(), bin.size(), true,
                             &cbs, qp, &qp->run, &e) < 0) {
            mu_.unlock();
            error_response(*qp, e);
            mu_.lock();
            return;
        }
        reqs_.push_back(std::move(q));
    }

    static void on_token(void *ctx, int32_t id, uint32_t index, const char *text, size_t len)
    {
        auto *q = static_cast<Req *>(ctx);
        StreamCall *s = q->s;
        pb::ModelStreamInferResponse m = s->make(*q);
        auto *r = m.mutable_infer_response();
        if (q->text) {
            auto *t = r->add_outputs();
            t->set_name("text_output");
            t->set_datatype("BYTES");
            t->add_shape(1);
            std::string raw;
            put<uint32_t>(&raw, (uint32_t)len);
            raw.append(text, len);
            r->add_raw_output_contents(std::move(raw));
        }
        if (q->ids) {
            auto *t = r->add_outputs();
            t->set_name("output_ids");
            t->set_datatype("INT32");
            t->add_shape(1);
            r->add_raw_output_contents(std::string((const char *)&id, 4));
        }
        auto &p = *r->mutable_parameters();
        p["index"].set_int64_param(index);
        p["triton_final_response"].set_bool_param(false);
        s->push(std::move(m));
    }

    static void on_done(void *ctx, json_t *resp, const char *bin, size_t bin_len,
                        const inferd_error *err)
    {
        auto *q = static_cast<Req *>(ctx);
        StreamCall *s = q->s;
        if (err) {
            s->error_response(*q, *err, q);
        } else {
            pb::ModelStreamInferResponse m = s->make(*q);
            inferd_error e{};
            if (response_pb(resp, bin, bin_len, q->id, m.mutable_infer_response(), &e) < 0) {
                s->error_response(*q, e, q);
            } else {
                (*m.mutable_infer_response()->mutable_parameters())["triton_final_response"]
                    .set_bool_param(true);
                s->push(std::move(m), q);
            }
        }
    }

    // Queue response @p m; the last of request @p ends when given.
    void push(pb::ModelStreamInferResponse &&m, Req *ends = nullptr)
    {
        std::unique_lock<std::mutex> lk(mu_);
        if (ends)
            ends->ended = true;
        grpc::ByteBuffer out;
        if (!broken_ && !finishing_ && serialize(m, &out).ok()) {
            queue_.push_back(std::move(out));
            write_next_locked();
        }
        finish_if_over(lk);
    }

    // The client left or the call was cancelled: no more writes; its
    // requests are cancelled (each still ends, with its done()).
    void break_locked()
    {
        broken_ = true;
        /* Responses not written yet go; the one being written stays until
         * its OnWriteDone (gRPC reads it until then). */
        queue_.erase(writing_ ? queue_.begin() + 1 : queue_.begin(), queue_.end());
        for (auto &q : reqs_)
            if (q->run)
                inferd__kv_cancel(q->run);
    }

    void write_next_locked()
    {
        if (writing_ || queue_.empty() || broken_ || finishing_)
            return;
        writing_ = true;
        StartWrite(&queue_.front());
    }

    // Runs that ended, out of reqs_ (released at the end of the stream, or
    // here when not inside their own callbacks).
    void reap_locked()
    {
        for (auto it = reqs_.begin(); it != reqs_.end();) {
            if ((*it)->ended) {
                ended_.push_back(std::move(*it));
                it = reqs_.erase(it);
            } else {
                ++it;
            }
        }
        if (ended_.size() > 16) {
            std::vector<std::unique_ptr<Req>> done;
            done.swap(ended_);
            mu_.unlock();
            for (auto &q : done)
                inferd__kv_release(q->run);
            mu_.lock();
        }
    }

    // Finish the call once nothing is pending: no read, no write, no
    // response queued, every request ended. Releases @p lk.
    void finish_if_over(std::unique_lock<std::mutex> &lk)
    {
        bool over = !finishing_ && !reading_ && !writing_ && queue_.empty();
        for (auto &q : reqs_)
            over = over && q->ended;
        if (over)
            finishing_ = true;
        const bool broken = broken_;
        lk.unlock();
        if (over)
            Finish(broken ? Status::CANCELLED : Status::OK);
    }

    Counted count_;
    CallbackServerContext *ctx_;
    grpc::ByteBuffer rbuf_;     /* the message being read */
    pb::ModelInferRequest req_; /* the last one, parsed */
    std::mutex mu_;
    std::deque<grpc::ByteBuffer> queue_; /* responses, serialized */
    std::vector<std::unique_ptr<Req>> reqs_, ended_;
    bool reading_ = true, writing_ = false, finishing_ = false, broken_ = false;
};

// ---- blocking jobs (repository load and unload) ----

class JobCall final : public ServerUnaryReactor
{
  public:
    JobCall(inferd_grpc *g, const kv_env &env, std::string model, bool load, grpc::ByteBuffer *out)
        : count_(g), env_(env), model_(std::move(model)), load_(load), out_(out)
    {
    }
    void start()
    {
        inferd_error e{};
        if (!count_.take()) {
            Finish(fail(INFERD_E_OVERLOADED, "too many calls at once (%u): retry later",
                        count_.g->o.max_calls));
            return;
        }
        if (inferd__kv_post(count_.g->pump, &JobCall::run, this, &e) < 0)
            Finish(status_of(e));
    }
    void OnDone() override { delete this; }

  private:
    static void run(void *ctx)
    {
        auto *j = static_cast<JobCall *>(ctx);
        inferd_error e{};
        int rc = inferd__kv_repository_load(&j->env_, j->model_.c_str(), j->load_, SEE, &e);
        Status st = rc < 0 ? status_of(e) : Status::OK;
        if (st.ok()) /* both responses are empty messages */
            st = serialize(pb::RepositoryModelLoadResponse(), j->out_);
        j->Finish(st);
    }
    Counted count_;
    kv_env env_;
    std::string model_;
    bool load_;
    grpc::ByteBuffer *out_;
};

// ---- the service ----

// Every method's raw (bytes) callback, over gRPC's synchronous base class.
using RawService = pb::GRPCInferenceService::WithRawCallbackMethod_ServerLive<
    pb::GRPCInferenceService::WithRawCallbackMethod_ServerReady<
        pb::GRPCInferenceService::WithRawCallbackMethod_ModelReady<
            pb::GRPCInferenceService::WithRawCallbackMethod_ServerMetadata<
                pb::GRPCInferenceService::WithRawCallbackMethod_ModelMetadata<
                    pb::GRPCInferenceService::WithRawCallbackMethod_ModelInfer<
                        pb::GRPCInferenceService::WithRawCallbackMethod_ModelStreamInfer<
                            pb::GRPCInferenceService::WithRawCallbackMethod_RepositoryIndex<
                                pb::GRPCInferenceService::WithRawCallbackMethod_RepositoryModelLoad<
                                    pb::GRPCInferenceService::WithRawCallbackMethod_RepositoryModelUnload<
                                        pb::GRPCInferenceService::
                                            WithRawCallbackMethod_SystemSharedMemoryStatus<
                                                pb::GRPCInferenceService::
                                                    WithRawCallbackMethod_SystemSharedMemoryRegister<
                                                        pb::GRPCInferenceService::
                                                            WithRawCallbackMethod_SystemSharedMemoryUnregister<
                                                                pb::GRPCInferenceService::
                                                                    Service>>>>>>>>>>>>>;

using grpc::ByteBuffer;

class Service final : public RawService
{
  public:
    explicit Service(inferd_grpc *g) : g_(g) {}

    // A unary call answered at once: parse, run @p fn, serialize.
    template <class Req, class Resp>
    ServerUnaryReactor *unary(CallbackServerContext *ctx, const ByteBuffer *in, ByteBuffer *out,
                              Status (Service::*fn)(CallbackServerContext *, const Req &, Resp *))
    {
        Req q;
        Resp r;
        Status st = parse(in, &q);
        if (st.ok())
            st = (this->*fn)(ctx, q, &r);
        if (st.ok())
            st = serialize(r, out);
        return answer(ctx, st);
    }

#define UNARY(NAME, REQ, RESP)                                                                  \
    ServerUnaryReactor *NAME(CallbackServerContext *ctx, const ByteBuffer *in, ByteBuffer *out) \
        override                                                                                \
    {                                                                                           \
        return unary<pb::REQ, pb::RESP>(ctx, in, out, &Service::NAME##_);                       \
    }
    UNARY(ServerLive, ServerLiveRequest, ServerLiveResponse)
    UNARY(ServerReady, ServerReadyRequest, ServerReadyResponse)
    UNARY(ModelReady, ModelReadyRequest, ModelReadyResponse)
    UNARY(ServerMetadata, ServerMetadataRequest, ServerMetadataResponse)
    UNARY(ModelMetadata, ModelMetadataRequest, ModelMetadataResponse)
    UNARY(RepositoryIndex, RepositoryIndexRequest, RepositoryIndexResponse)
    UNARY(SystemSharedMemoryStatus, SystemSharedMemoryStatusRequest,
          SystemSharedMemoryStatusResponse)
    UNARY(SystemSharedMemoryRegister, SystemSharedMemoryRegisterRequest,
          SystemSharedMemoryRegisterResponse)
    UNARY(SystemSharedMemoryUnregister, SystemSharedMemoryUnregisterRequest,
          SystemSharedMemoryUnregisterResponse)
#undef UNARY

    ServerUnaryReactor *ModelInfer(CallbackServerContext *ctx, const ByteBuffer *in,
                                   ByteBuffer *out) override
    {
        auto *c = new InferCall(g_, out);
        c->start(ctx, in);
        return c;
    }

    grpc::ServerBidiReactor<ByteBuffer, ByteBuffer> *
    ModelStreamInfer(CallbackServerContext *ctx) override
    {
        return new StreamCall(g_, ctx);
    }

    ServerUnaryReactor *RepositoryModelLoad(CallbackServerContext *ctx, const ByteBuffer *in,
                                            ByteBuffer *out) override
    {
        pb::RepositoryModelLoadRequest q;
        Status st = parse(in, &q);
        if (!st.ok())
            return answer(ctx, st);
        return repository(ctx, q.model_name(), q.parameters().size(), true, out);
    }

    ServerUnaryReactor *RepositoryModelUnload(CallbackServerContext *ctx, const ByteBuffer *in,
                                              ByteBuffer *out) override
    {
        pb::RepositoryModelUnloadRequest q;
        Status st = parse(in, &q);
        if (!st.ok())
            return answer(ctx, st);
        return repository(ctx, q.model_name(), q.parameters().size(), false, out);
    }

  private:
    Status ServerLive_(CallbackServerContext *, const pb::ServerLiveRequest &,
                       pb::ServerLiveResponse *resp)
    {
        resp->set_live(inferd_frontend_state(g_->fe) != INFERD_FE_STOPPED);
        return Status::OK;
    }

    Status ServerReady_(CallbackServerContext *ctx, const pb::ServerReadyRequest &,
                        pb::ServerReadyResponse *resp)
    {
        const kv_env env = env_for(g_, ctx);
        resp->set_ready(inferd__kv_server_ready(&env));
        return Status::OK;
    }

    Status ModelReady_(CallbackServerContext *ctx, const pb::ModelReadyRequest &q,
                       pb::ModelReadyResponse *resp)
    {
        Status st = check_key(g_, ctx);
        if (!st.ok())
            return st;
        if ((st = check_version(q.version())).ok()) {
            const kv_env env = env_for(g_, ctx);
            bool ready = false;
            const char *id = nullptr;
            inferd_error e{};
            if (inferd__kv_model_ready(&env, q.name().c_str(), SEE, &ready, &id, &e) < 0)
                st = status_of(e);
            resp->set_ready(ready);
        }
        return st;
    }

    Status ServerMetadata_(CallbackServerContext *ctx, const pb::ServerMetadataRequest &,
                           pb::ServerMetadataResponse *resp)
    {
        Status st = check_key(g_, ctx);
        if (!st.ok())
            return st;
        const kv_env env = env_for(g_, ctx);
        Json m(inferd__kv_server_meta(&env));
        resp->set_name(json_string_value(json_object_get(m.v, "name")));
        resp->set_version(json_string_value(json_object_get(m.v, "version")));
        size_t i;
        json_t *v;
        json_array_foreach (json_object_get(m.v, "extensions"), i, v)
            resp->add_extensions(json_string_value(v));
        return Status::OK;
    }

    Status ModelMetadata_(CallbackServerContext *ctx, const pb::ModelMetadataRequest &q,
                          pb::ModelMetadataResponse *resp)
    {
        Status st = check_key(g_, ctx);
        if (st.ok())
            st = check_version(q.version());
        if (!st.ok())
            return st;
        const kv_env env = env_for(g_, ctx);
        inferd_error e{};
        json_t *meta = nullptr;
        if (inferd__kv_model_meta(&env, q.name().c_str(), SEE, &meta, &e) < 0)
            return status_of(e);
        Json m(meta);
        resp->set_name(json_string_value(json_object_get(meta, "name")));
        resp->add_versions("1");
        resp->set_platform(json_string_value(json_object_get(meta, "platform")));
        for (int k = 0; k < 2; k++) {
            size_t i;
            json_t *t;
            json_array_foreach (json_object_get(meta, k ? "outputs" : "inputs"), i, t) {
                auto *tm = k ? resp->add_outputs() : resp->add_inputs();
                tm->set_name(json_string_value(json_object_get(t, "name")));
                tm->set_datatype(json_string_value(json_object_get(t, "datatype")));
                size_t d;
                json_t *v;
                json_array_foreach (json_object_get(t, "shape"), d, v)
                    tm->add_shape(json_integer_value(v));
            }
        }
        return Status::OK;
    }

    Status RepositoryIndex_(CallbackServerContext *ctx, const pb::RepositoryIndexRequest &q,
                            pb::RepositoryIndexResponse *resp)
    {
        Status st = check_key(g_, ctx);
        if (!st.ok())
            return st;
        const kv_env env = env_for(g_, ctx);
        Json idx(inferd__kv_repository_index(&env, q.ready()));
        size_t i;
        json_t *m;
        json_array_foreach (idx.v, i, m) {
            auto *e = resp->add_models();
            e->set_name(json_string_value(json_object_get(m, "name")));
            e->set_version(json_string_value(json_object_get(m, "version")));
            e->set_state(json_string_value(json_object_get(m, "state")));
            e->set_reason(json_string_value(json_object_get(m, "reason")));
        }
        return Status::OK;
    }

    Status SystemSharedMemoryStatus_(CallbackServerContext *ctx,
                                     const pb::SystemSharedMemoryStatusRequest &q,
                                     pb::SystemSharedMemoryStatusResponse *resp)
    {
        const kv_env env = env_for(g_, ctx);
        Status st = shm_allowed(ctx, env);
        if (!st.ok())
            return st;
        inferd_error e{};
        size_t n = 0;
        std::vector<inferd_region_info> all;
        const char *name = q.name().empty() ? nullptr : q.name().c_str();
        for (;;) { /* regions may come and go between the count and the copy */
            if (inferd_regions_status(env.regions, name, all.data(), all.size(), &n, &e) < 0)
                return status_of(e);
            if (n <= all.size())
                break;
            all.resize(n);
        }
        for (size_t i = 0; i < n; i++) {
            pb::SystemSharedMemoryStatusResponse::RegionStatus rs;
            rs.set_name(all[i].name);
            rs.set_key(all[i].key);
            rs.set_offset(all[i].offset);
            rs.set_byte_size(all[i].byte_size);
            (*resp->mutable_regions())[all[i].name] = rs;
        }
        return Status::OK;
    }

    Status SystemSharedMemoryRegister_(CallbackServerContext *ctx,
                                       const pb::SystemSharedMemoryRegisterRequest &q,
                                       pb::SystemSharedMemoryRegisterResponse *)
    {
        const kv_env env = env_for(g_, ctx);
        Status st = shm_allowed(ctx, env);
        if (!st.ok())
            return st;
        char session[INFERD_REGION_SESSION_MAX];
        session_of(g_, ctx, session);
        inferd_error e{};
        if (inferd_regions_register(env.regions, q.name().c_str(), q.key().c_str(), q.offset(),
                                    q.byte_size(), session, &e) < 0)
            return status_of(e);
        return Status::OK;
    }

    Status SystemSharedMemoryUnregister_(CallbackServerContext *ctx,
                                         const pb::SystemSharedMemoryUnregisterRequest &q,
                                         pb::SystemSharedMemoryUnregisterResponse *)
    {
        const kv_env env = env_for(g_, ctx);
        Status st = shm_allowed(ctx, env);
        if (!st.ok())
            return st;
        inferd_error e{};
        if (inferd_regions_unregister(env.regions, q.name().empty() ? nullptr : q.name().c_str(),
                                      &e) < 0)
            return status_of(e);
        return Status::OK;
    }

  private:
    static Status check_version(const std::string &v)
    {
        inferd_error e{};
        return ::check_version(v, &e) < 0 ? status_of(e) : Status::OK;
    }

    Status shm_allowed(const CallbackServerContext *ctx, const kv_env &env)
    {
        Status st = check_key(g_, ctx);
        if (!st.ok())
            return st;
        if (!g_->o.regions)
            return fail(INFERD_E_UNSUPPORTED,
                        "system shared memory is off on this server (--shm off, or no HTTP door)");
        if (!env.regions)
            return fail(INFERD_E_UNSUPPORTED,
                        "system shared memory is served on the Unix socket and on loopback "
                        "addresses only (--shm on serves it on every listener)");
        return Status::OK;
    }

    ServerUnaryReactor *repository(CallbackServerContext *ctx, const std::string &model,
                                   size_t n_params, bool load, ByteBuffer *out)
    {
        Status st = check_key(g_, ctx);
        if (st.ok() && n_params > 0)
            st = fail(INFERD_E_FIELD_UNSUPPORTED,
                      "parameters: inferd loads the models it was started with, as they are "
                      "(no config or file parameters)");
        if (!st.ok())
            return answer(ctx, st);
        auto *j = new JobCall(g_, env_for(g_, ctx), model, load, out);
        j->start();
        return j;
    }

    inferd_grpc *g_;
};

} // namespace

// ---- the C API ----

// The door's section of /v1/status.
static json_t *status_json(void *ctx)
{
    const inferd_grpc *g = static_cast<const inferd_grpc *>(ctx);
    return json_pack("{s:i,s:s?,s:i,s:i,s:I,s:I,s:I}", "port", g->port, "unix",
                     g->unix_path.empty() ? nullptr : g->unix_path.c_str(), "calls_active",
                     (int)std::min(g->calls.load(), g->o.max_calls), "streams_active",
                     (int)g->streams.load(), "calls_total", (json_int_t)g->calls_total.load(),
                     "calls_refused", (json_int_t)g->calls_refused.load(), "stream_requests_total",
                     (json_int_t)g->stream_requests.load());
}

extern "C" bool inferd_grpc_built(void) { return true; }

extern "C" int inferd_grpc_create(const inferd_grpc_opts *opts, inferd_frontend *fe,
                                  inferd_grpc **out, inferd_error *err)
{
    *out = nullptr;
    if (!opts->tcp && !(opts->unix_path && opts->unix_path[0]))
        return inferd_fail(err, INFERD_E_INVALID, "grpc: give a port, a Unix socket, or both");
    if (opts->max_calls < 1 || opts->max_stream_requests < 1 || opts->max_message_bytes < 1024 ||
        opts->max_message_bytes > (size_t)INT32_MAX)
        return inferd_fail(err, INFERD_E_INVALID,
                           "grpc: max_calls and max_stream_requests must be >= 1, "
                           "max_message_bytes 1 KiB to 2 GiB");
    auto g = std::make_unique<inferd_grpc>();
    g->fe = fe;
    g->o = *opts;
    g->host = opts->host ? opts->host : "127.0.0.1";
    g->api_key = opts->api_key ? opts->api_key : "";
    if (opts->unix_path)
        g->unix_path = opts->unix_path;
    for (size_t i = 0; i < opts->n_identity && i < 8; i++)
        g->identity.emplace_back(opts->identity[i]);
    for (auto &s : g->identity)
        g->identity_c.push_back(&s[0]);
    if (opts->shm_caps)
        g->caps = *opts->shm_caps;
    else
        inferd_shm_caps_detect(&g->caps);
    if (inferd__kv_pump_create(opts->pump_threads ? opts->pump_threads : 2, &g->pump, err) < 0)
        return err ? err->code : INFERD_E_INTERNAL;

    g->service = std::make_unique<Service>(g.get());
    grpc::ServerBuilder b;
    if (opts->tcp) {
        const bool v6 = g->host.find(':') != std::string::npos;
        const std::string addr =
            (v6 ? "[" + g->host + "]" : g->host) + ":" + std::to_string(opts->port);
        b.AddListeningPort(addr, grpc::InsecureServerCredentials(), &g->port);
    }
    if (!g->unix_path.empty()) {
        struct stat st;
        if (lstat(g->unix_path.c_str(), &st) == 0) {
            if (!S_ISSOCK(st.st_mode)) {
                inferd__kv_pump_destroy(g->pump);
                return inferd_fail(err, INFERD_E_IO, "grpc: %s exists and is not a socket",
                                   g->unix_path.c_str());
            }
            unlink(g->unix_path.c_str()); /* a socket left by an earlier run */
        }
        b.AddListeningPort("unix:" + g->unix_path, grpc::InsecureServerCredentials());
    }
    b.RegisterService(g->service.get());
    b.SetMaxReceiveMessageSize((int)opts->max_message_bytes);
    b.SetMaxSendMessageSize(INT32_MAX);
    b.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    if (opts->idle_timeout_s)
        b.AddChannelArgument(
            GRPC_ARG_MAX_CONNECTION_IDLE_MS,
            (int)std::min<uint64_t>((uint64_t)opts->idle_timeout_s * 1000, INT32_MAX));
    g->server = b.BuildAndStart();
    if (!g->server || (opts->tcp && g->port == 0)) {
        g->server.reset();
        inferd__kv_pump_destroy(g->pump);
        return inferd_fail(err, INFERD_E_IO, "grpc: cannot listen on %s:%u%s%s", g->host.c_str(),
                           (unsigned)opts->port,
                           g->unix_path.empty() ? "" : " or unix:", g->unix_path.c_str());
    }
    if (!g->unix_path.empty())
        chmod(g->unix_path.c_str(), 0600);
    g->status_set = inferd_frontend_set_status(fe, "grpc", status_json, g.get()) == 0;
    *out = g.release();
    return 0;
}

extern "C" uint16_t inferd_grpc_port(const inferd_grpc *g) { return g ? (uint16_t)g->port : 0; }

extern "C" uint32_t inferd_grpc_active_calls(const inferd_grpc *g)
{
    return g ? g->calls.load() : 0;
}

extern "C" void inferd_grpc_drain(inferd_grpc *g)
{
    if (!g || g->drained)
        return;
    g->drained = true;
    g->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

extern "C" void inferd_grpc_destroy(inferd_grpc *g)
{
    if (!g)
        return;
    if (g->status_set)
        inferd_frontend_set_status(g->fe, "grpc", nullptr, nullptr);
    inferd_grpc_drain(g);
    g->server->Wait();
    g->server.reset();
    inferd__kv_pump_destroy(g->pump);
    if (!g->unix_path.empty())
        unlink(g->unix_path.c_str());
    delete g;
}
