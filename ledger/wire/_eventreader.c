/* Journal events (event.v1, Avro binary after the single-object header) straight into
 * Arrow column buffers, one row per posting: the replay's hot loop without a Python
 * object per field. ledger/wire/event.py's `read_events` is the reference
 * implementation; a property test holds the two equal, record for record, failure for
 * failure (same error kind and message). The layout's constants are exported as
 * N_KINDS, N_ACTORS and HEADER_LEN; a unit test holds them to schemas/event.v1.avsc.
 *
 * read(values, partitions, offsets, as_of) -> (columns, failures, later, events)
 *   values      list of bytes, each starting with the 10-byte header (not checked here)
 *   partitions  list of int, offsets: list of int, one per value
 *   as_of       int or None: events with occurred_at > as_of are left out (counted in later)
 *   columns     dict of bytes buffers (see COLUMN NAMES below), Arrow layouts:
 *               strings as int32 offsets + UTF-8 data, ints little-endian, reverses with a
 *               validity bitmap
 *   failures    list of (index, kind, message), kind 1 = truncated, 2 = malformed
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define HEADER_LEN 10
#define N_KINDS 5
#define N_ACTORS 3

enum { OK = 0, TRUNCATED = 1, MALFORMED = 2 };

typedef struct {
    char *data;
    size_t len, cap;
} Buf;

static int buf_reserve(Buf *b, size_t more) {
    if (b->len + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more) cap *= 2;
    char *p = PyMem_Realloc(b->data, cap);
    if (!p) { PyErr_NoMemory(); return -1; }
    b->data = p;
    b->cap = cap;
    return 0;
}

static int buf_put(Buf *b, const void *src, size_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, src, n);
    b->len += n;
    return 0;
}

/* A string column: int32 offsets (one more than rows) and the bytes. */
typedef struct {
    Buf offsets, data;
} StrCol;

static int str_put(StrCol *c, const char *s, size_t n) {
    if (c->data.len + n > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "string column over 2 GiB in one batch");
        return -1;
    }
    if (buf_put(&c->data, s, n) < 0) return -1;
    int32_t end = (int32_t)c->data.len;
    return buf_put(&c->offsets, &end, sizeof end);
}

static int str_init(StrCol *c) {
    int32_t zero = 0;
    return buf_put(&c->offsets, &zero, sizeof zero);
}

typedef struct {
    StrCol event_id, command_id, account, reason, reverses;
    Buf kind, actor, posting, amount, occurred_at, partition, offset, valid;
    size_t rows, nulls;
} Cols;

/* Marks to roll a record back to when it turns out bad or too late. */
typedef struct {
    size_t rows, nulls;
    size_t str_off[5], str_data[5];
} Mark;

static StrCol *str_cols(Cols *c, int i) {
    StrCol *all[5] = {&c->event_id, &c->command_id, &c->account, &c->reason, &c->reverses};
    return all[i];
}

static Buf *fixed_cols(Cols *c, int i) {
    Buf *all[8] = {&c->kind, &c->actor, &c->posting, &c->amount, &c->occurred_at,
                   &c->partition, &c->offset, &c->valid};
    return all[i];
}

static const size_t FIXED_WIDTH[7] = {1, 1, 4, 8, 8, 4, 8};

static void mark(Cols *c, Mark *m) {
    m->rows = c->rows;
    m->nulls = c->nulls;
    for (int i = 0; i < 5; i++) {
        m->str_off[i] = str_cols(c, i)->offsets.len;
        m->str_data[i] = str_cols(c, i)->data.len;
    }
}

static void rollback(Cols *c, const Mark *m) {
    for (int i = 0; i < 5; i++) {
        str_cols(c, i)->offsets.len = m->str_off[i];
        str_cols(c, i)->data.len = m->str_data[i];
    }
    for (int i = 0; i < 7; i++) fixed_cols(c, i)->len = m->rows * FIXED_WIDTH[i];
    c->valid.len = (m->rows + 7) / 8;
    if (m->rows % 8) c->valid.data[m->rows / 8] &= (char)((1u << (m->rows % 8)) - 1);
    c->rows = m->rows;
    c->nulls = m->nulls;
}

static void cols_free(Cols *c) {
    for (int i = 0; i < 5; i++) {
        PyMem_Free(str_cols(c, i)->offsets.data);
        PyMem_Free(str_cols(c, i)->data.data);
    }
    for (int i = 0; i < 8; i++) PyMem_Free(fixed_cols(c, i)->data);
}

/* --- the record reader ------------------------------------------------------------- */

typedef struct {
    const unsigned char *d;
    Py_ssize_t pos, len;
    int error;
    char message[160];
} Reader;

static int fail(Reader *r, int kind, const char *message) {
    if (!r->error) {
        r->error = kind;
        snprintf(r->message, sizeof r->message, "%s", message);
    }
    return -1;
}

static int varint(Reader *r, int64_t *out) {
    uint64_t n = 0;
    int shift = 0;
    for (;;) {
        if (r->pos >= r->len) return fail(r, TRUNCATED, "event record is truncated");
        unsigned b = r->d[r->pos++];
        if (shift == 63 && b > 1) return fail(r, MALFORMED, "varint overflows 64 bits");
        n |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            *out = (int64_t)(n >> 1) ^ -(int64_t)(n & 1);
            return 0;
        }
        shift += 7;
        if (shift > 63) return fail(r, MALFORMED, "varint longer than 10 bytes");
    }
}

/* Strict UTF-8 as Python's str.decode checks it: no overlongs, no surrogates, <= U+10FFFF. */
static int utf8_ok(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        int extra;
        unsigned min;
        if (c >= 0xC2 && c <= 0xDF) { extra = 1; min = 0x80; }
        else if (c >= 0xE0 && c <= 0xEF) { extra = 2; min = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { extra = 3; min = 0x10000; }
        else return 0;
        if (i + extra >= n) return 0;
        unsigned cp = c & (0x3F >> extra);
        for (int k = 1; k <= extra; k++) {
            unsigned cc = s[i + k];
            if ((cc & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += extra + 1;
    }
    return 1;
}

/* A string at the reader's position: (start, length) into the record. */
static int string(Reader *r, const unsigned char **s, Py_ssize_t *n) {
    int64_t len;
    if (varint(r, &len) < 0) return -1;
    if (len < 0 || len > r->len - r->pos) {
        char m[120];
        snprintf(m, sizeof m, "string of length %lld at byte %zd overruns the record",
                 (long long)len, r->pos);
        return fail(r, MALFORMED, m);
    }
    *s = r->d + r->pos;
    *n = (Py_ssize_t)len;
    r->pos += (Py_ssize_t)len;
    if (!utf8_ok(*s, *n)) return fail(r, MALFORMED, "event record holds invalid UTF-8");
    return 0;
}

static int byte(Reader *r, unsigned *b) {
    if (r->pos >= r->len) return fail(r, TRUNCATED, "event record is truncated");
    *b = r->d[r->pos++];
    return 0;
}

typedef struct {
    const unsigned char *event_id, *command_id, *reason, *reverses;
    Py_ssize_t event_id_n, command_id_n, reason_n, reverses_n;
    unsigned kind, actor;
    int64_t occurred_at;
    int has_reverses;
} Event;

/* Postings go straight into the columns (account, amount, posting); the event's own
 * fields are gathered in ev and spread over its postings afterwards. Returns the number
 * of postings, or -1 (r->error set, or a Python error if r->error is 0). */
static Py_ssize_t read_record(Reader *r, Cols *c, Event *ev) {
    if (string(r, &ev->event_id, &ev->event_id_n) < 0) return -1;
    if (string(r, &ev->command_id, &ev->command_id_n) < 0) return -1;
    if (byte(r, &ev->kind) < 0) return -1;
    Py_ssize_t postings = 0;
    for (;;) {
        int64_t count, size;
        if (varint(r, &count) < 0) return -1;
        if (count == 0) break;
        if (count < 0) {  /* a block that also gives its byte size: skip the size */
            count = -count;
            if (varint(r, &size) < 0) return -1;
        }
        for (int64_t k = 0; k < count; k++) {
            const unsigned char *account;
            Py_ssize_t account_n;
            int64_t amount;
            if (string(r, &account, &account_n) < 0) return -1;
            if (varint(r, &amount) < 0) return -1;
            int32_t index = (int32_t)postings;
            if (str_put(&c->account, (const char *)account, (size_t)account_n) < 0
                || buf_put(&c->amount, &amount, 8) < 0 || buf_put(&c->posting, &index, 4) < 0)
                return -1;
            postings++;
        }
    }
    if (varint(r, &ev->occurred_at) < 0) return -1;
    if (byte(r, &ev->actor) < 0) return -1;
    if (string(r, &ev->reason, &ev->reason_n) < 0) return -1;
    unsigned branch;
    if (byte(r, &branch) < 0) return -1;
    ev->has_reverses = branch == 2;
    if (branch == 2) {
        if (string(r, &ev->reverses, &ev->reverses_n) < 0) return -1;
    } else if (branch != 0) {
        char m[80];
        snprintf(m, sizeof m, "union branch byte %u of reverses_event_id", branch);
        return fail(r, MALFORMED, m);
    }
    if (r->pos != r->len) {
        char m[80];
        snprintf(m, sizeof m, "event record has %zd trailing bytes", r->len - r->pos);
        return fail(r, MALFORMED, m);
    }
    if (ev->kind & 1 || ev->kind >= 2 * N_KINDS || ev->actor & 1 || ev->actor >= 2 * N_ACTORS) {
        char m[80];
        snprintf(m, sizeof m, "enum byte out of range (kind %u, actor %u)", ev->kind, ev->actor);
        return fail(r, MALFORMED, m);
    }
    return postings;
}

/* The event's fields, once per posting of it. */
static int spread(Cols *c, const Event *ev, Py_ssize_t postings, int32_t partition,
                  int64_t offset) {
    uint8_t kind = (uint8_t)(ev->kind >> 1), actor = (uint8_t)(ev->actor >> 1);
    for (Py_ssize_t k = 0; k < postings; k++) {
        if (str_put(&c->event_id, (const char *)ev->event_id, (size_t)ev->event_id_n) < 0
            || str_put(&c->command_id, (const char *)ev->command_id, (size_t)ev->command_id_n) < 0
            || str_put(&c->reason, (const char *)ev->reason, (size_t)ev->reason_n) < 0
            || str_put(&c->reverses, (const char *)ev->reverses,
                       ev->has_reverses ? (size_t)ev->reverses_n : 0) < 0
            || buf_put(&c->kind, &kind, 1) < 0 || buf_put(&c->actor, &actor, 1) < 0
            || buf_put(&c->occurred_at, &ev->occurred_at, 8) < 0
            || buf_put(&c->partition, &partition, 4) < 0 || buf_put(&c->offset, &offset, 8) < 0)
            return -1;
        size_t row = c->rows++;
        if (row % 8 == 0) {
            char zero = 0;
            if (buf_put(&c->valid, &zero, 1) < 0) return -1;
        }
        if (ev->has_reverses) c->valid.data[row / 8] |= (char)(1u << (row % 8));
        else c->nulls++;
    }
    return 0;
}

/* --- the Python function ------------------------------------------------------------ */

static int add_failure(PyObject *failures, Py_ssize_t index, const Reader *r) {
    PyObject *item = Py_BuildValue("(nis)", index, r->error, r->message);
    if (!item) return -1;
    int rc = PyList_Append(failures, item);
    Py_DECREF(item);
    return rc;
}

static PyObject *as_bytes(const Buf *b) {
    return PyBytes_FromStringAndSize(b->data ? b->data : "", (Py_ssize_t)b->len);
}

static PyObject *columns_dict(Cols *c) {
    const char *str_names[5] = {"event_id", "command_id", "account", "reason", "reverses"};
    const char *fixed_names[8] = {"kind", "actor", "posting", "amount", "occurred_at",
                                  "partition", "offset", "reverses_valid"};
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (int i = 0; i < 13; i++) {
        int is_str = i < 5;
        PyObject *v = is_str
            ? Py_BuildValue("(NN)", as_bytes(&str_cols(c, i)->offsets),
                            as_bytes(&str_cols(c, i)->data))
            : as_bytes(fixed_cols(c, i - 5));
        if (!v || PyDict_SetItemString(d, is_str ? str_names[i] : fixed_names[i - 5], v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    PyObject *meta = Py_BuildValue("(nn)", (Py_ssize_t)c->rows, (Py_ssize_t)c->nulls);
    if (!meta || PyDict_SetItemString(d, "rows_nulls", meta) < 0) {
        Py_XDECREF(meta);
        Py_DECREF(d);
        return NULL;
    }
    Py_DECREF(meta);
    return d;
}

/* Everything one call accumulates. */
typedef struct {
    Cols c;
    PyObject *failures;  /* [(index, kind, message)] */
    Py_ssize_t later, events;
    int has_as_of;
    int64_t as_of;
} Batch;

static int batch_init(Batch *b, PyObject *as_of_obj) {
    memset(b, 0, sizeof *b);
    b->has_as_of = as_of_obj != Py_None;
    if (b->has_as_of) {
        b->as_of = PyLong_AsLongLong(as_of_obj);
        if (PyErr_Occurred()) return -1;
    }
    b->failures = PyList_New(0);
    if (!b->failures) return -1;
    for (int i = 0; i < 5; i++)
        if (str_init(str_cols(&b->c, i)) < 0) return -1;
    return 0;
}

static PyObject *batch_result(Batch *b, PyObject *extra) {
    PyObject *result = NULL, *cols = columns_dict(&b->c);
    if (cols)
        result = extra ? Py_BuildValue("(NOnnO)", cols, b->failures, b->later, b->events, extra)
                       : Py_BuildValue("(NOnn)", cols, b->failures, b->later, b->events);
    return result;
}

static void batch_free(Batch *b) {
    Py_XDECREF(b->failures);
    cols_free(&b->c);
}

/* One record (header included) into the batch; -1 only on a Python error. */
static int read_one(Batch *b, Py_ssize_t index, const char *data, Py_ssize_t len,
                    int32_t partition, int64_t offset) {
    Reader r = {(const unsigned char *)data, HEADER_LEN, len, OK, ""};
    Mark m;
    mark(&b->c, &m);
    Event ev;
    Py_ssize_t postings = read_record(&r, &b->c, &ev);
    if (postings < 0) {
        if (!r.error) return -1;  /* out of memory */
        rollback(&b->c, &m);
        return add_failure(b->failures, index, &r);
    }
    /* The postings were written before the event's own fields were known: drop them, or
     * spread the event over them. */
    if (b->has_as_of && ev.occurred_at > b->as_of) {
        rollback(&b->c, &m);
        b->later++;
        return 0;
    }
    if (spread(&b->c, &ev, postings, partition, offset) < 0) return -1;
    b->events++;
    return 0;
}

static PyObject *read_py(PyObject *self, PyObject *args) {
    PyObject *values, *partitions, *offsets, *as_of_obj, *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!O!O!O", &PyList_Type, &values, &PyList_Type, &partitions,
                          &PyList_Type, &offsets, &as_of_obj))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(values);
    if (PyList_GET_SIZE(partitions) != n || PyList_GET_SIZE(offsets) != n) {
        PyErr_SetString(PyExc_ValueError, "values, partitions and offsets differ in length");
        return NULL;
    }
    Batch b;
    if (batch_init(&b, as_of_obj) < 0) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyList_GET_ITEM(values, i);
        if (!PyBytes_Check(v) || PyBytes_GET_SIZE(v) < HEADER_LEN) {
            PyErr_SetString(PyExc_TypeError, "values must be bytes of at least the header");
            goto done;
        }
        int32_t partition = (int32_t)PyLong_AsLong(PyList_GET_ITEM(partitions, i));
        int64_t offset = PyLong_AsLongLong(PyList_GET_ITEM(offsets, i));
        if (PyErr_Occurred()
            || read_one(&b, i, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v), partition, offset) < 0)
            goto done;
    }
    result = batch_result(&b, NULL);
done:
    batch_free(&b);
    return result;
}

/* --- consumed messages ---------------------------------------------------------------- */

static PyObject *S_ERROR, *S_TOPIC, *S_VALUE, *S_PARTITION, *S_OFFSET;

static PyObject *call(PyObject *obj, PyObject *name) {
    return PyObject_CallMethodNoArgs(obj, name);
}

/* Is m a record of topic with a value that starts with header? Its value if so (a new
 * reference), Py_None (borrowed, not to be released) if not, NULL on a Python error. */
static PyObject *fast_value(PyObject *m, PyObject *topic, const char *header) {
    PyObject *err = call(m, S_ERROR);
    if (!err) return NULL;
    int is_error = err != Py_None;
    Py_DECREF(err);
    if (is_error) return Py_None;
    PyObject *t = call(m, S_TOPIC);
    if (!t) return NULL;
    int same = PyUnicode_Check(t) && PyUnicode_Compare(t, topic) == 0;
    Py_DECREF(t);
    if (!same) return Py_None;
    PyObject *v = call(m, S_VALUE);
    if (!v) return NULL;
    if (PyBytes_Check(v) && PyBytes_GET_SIZE(v) >= HEADER_LEN
        && memcmp(PyBytes_AS_STRING(v), header, HEADER_LEN) == 0)
        return v;
    Py_DECREF(v);
    return Py_None;
}

static int int_of(PyObject *m, PyObject *name, int64_t *out) {
    PyObject *v = call(m, name);
    if (!v) return -1;
    *out = v == Py_None ? 0 : PyLong_AsLongLong(v);
    Py_DECREF(v);
    return PyErr_Occurred() ? -1 : 0;
}

/* One message: into the batch if it is an event.v1 record of topic, else its index into
 * slow. New partitions go into seen. */
static int take_message(Batch *b, Py_ssize_t i, PyObject *m, PyObject *topic,
                        const char *header, PyObject *slow, PyObject *seen, int64_t *last) {
    PyObject *v = fast_value(m, topic, header);
    if (!v) return -1;
    if (v == Py_None) {
        PyObject *index = PyLong_FromSsize_t(i);
        int rc = index ? PyList_Append(slow, index) : -1;
        Py_XDECREF(index);
        return rc;
    }
    int64_t partition, offset;
    int rc = -1;
    if (int_of(m, S_PARTITION, &partition) == 0 && int_of(m, S_OFFSET, &offset) == 0
        && read_one(b, i, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v), (int32_t)partition,
                    offset) == 0) {
        rc = 0;
        if (partition != *last) {  /* consumed messages come in runs of one partition */
            PyObject *p = PyLong_FromLongLong(partition);
            rc = p ? PySet_Add(seen, p) : -1;
            Py_XDECREF(p);
            *last = partition;
        }
    }
    Py_DECREF(v);
    return rc;
}

static PyObject *read_messages_py(PyObject *self, PyObject *args) {
    PyObject *msgs, *topic, *as_of_obj, *result = NULL, *slow = NULL, *seen = NULL;
    const char *header;
    Py_ssize_t header_len;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!Uy#O", &PyList_Type, &msgs, &topic, &header, &header_len,
                          &as_of_obj))
        return NULL;
    if (header_len != HEADER_LEN) {
        PyErr_SetString(PyExc_ValueError, "the header is 10 bytes");
        return NULL;
    }
    Batch b;
    int64_t last = -1;
    if (batch_init(&b, as_of_obj) < 0 || !(slow = PyList_New(0)) || !(seen = PySet_New(NULL)))
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(msgs); i++)
        if (take_message(&b, i, PyList_GET_ITEM(msgs, i), topic, header, slow, seen, &last) < 0)
            goto done;
    PyObject *extra = Py_BuildValue("(OO)", slow, seen);
    if (extra) {
        result = batch_result(&b, extra);
        Py_DECREF(extra);
    }
done:
    Py_XDECREF(slow);
    Py_XDECREF(seen);
    batch_free(&b);
    return result;
}

static PyMethodDef METHODS[] = {
    {"read", read_py, METH_VARARGS,
     "read(values, partitions, offsets, as_of) -> (columns, failures, later, events)"},
    {"read_messages", read_messages_py, METH_VARARGS,
     "read_messages(msgs, topic, header, as_of) -> "
     "(columns, failures, later, events, (slow indices, partitions))"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_eventreader",
    "event.v1 records straight into Arrow column buffers (see ledger.wire.event)", -1,
    METHODS, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__eventreader(void) {
    S_ERROR = PyUnicode_InternFromString("error");
    S_TOPIC = PyUnicode_InternFromString("topic");
    S_VALUE = PyUnicode_InternFromString("value");
    S_PARTITION = PyUnicode_InternFromString("partition");
    S_OFFSET = PyUnicode_InternFromString("offset");
    if (!S_ERROR || !S_TOPIC || !S_VALUE || !S_PARTITION || !S_OFFSET) return NULL;
    PyObject *m = PyModule_Create(&MODULE);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "N_KINDS", N_KINDS) < 0
        || PyModule_AddIntConstant(m, "N_ACTORS", N_ACTORS) < 0
        || PyModule_AddIntConstant(m, "HEADER_LEN", HEADER_LEN) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
