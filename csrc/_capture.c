/* bsdbpf._capture: the record layer of the capture path, in C.
 *
 * Batch   the records of one buffer, indexed once into struct-of-arrays
 *         columns (offset, caplen, wirelen, timestamp_ns), exported read-only
 *         through the buffer protocol.
 * Packet  one record: lengths, timestamp and the buffer protocol over its
 *         bytes, without a view object per packet.
 * Stream  the C iterator behind Descriptor.packets() and Batch.take(): it
 *         calls back into Python (fetch) at most once per buffer.
 *
 * Release rules: after Batch.release() every access through a Packet, a
 * column or a view this module made raises Released.  Views a user derived
 * (memoryview(pkt), slices, numpy arrays) cannot be revoked; they keep the
 * memory they point at alive (the Batch keeps its buffer until the last one
 * goes), and Batch.exports tells the buffer's owner that it must not reuse
 * that memory (buffered: read into a new buffer; zero-copy: freeze()).
 *
 * Written against the limited API (abi3) of CPython 3.11, the first whose
 * limited API has the buffer protocol; on older Pythons it builds as a
 * version-specific extension.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include "capture_records.h"

#if PY_VERSION_HEX < 0x030A0000  /* 3.9: what 3.10 added */
static inline PyObject *Py_NewRef(PyObject *o) { Py_INCREF(o); return o; }
#define Py_NewRef(o) Py_NewRef((PyObject *)(o))
#define PyObject_CallNoArgs(f) PyObject_CallFunctionObjArgs((f), NULL)
static int PyModule_AddObjectRef(PyObject *m, const char *name, PyObject *o)
{
    Py_INCREF(o);
    if (PyModule_AddObject(m, name, o) < 0) {
        Py_DECREF(o);
        return -1;
    }
    return 0;
}
#endif

#define NCOLUMNS 4
enum { COL_OFFSET, COL_CAPLEN, COL_WIRELEN, COL_TIMESTAMP };

static PyTypeObject *Batch_Type, *Packet_Type, *Stream_Type, *Column_Type;
static PyObject *Released;  /* subclass of ValueError and BufferError */

/* -- columns ----------------------------------------------------------- */

typedef struct {
    uint32_t *offset, *caplen, *wirelen;
    int64_t *ts;
    Py_ssize_t count, cap;
} Columns;

/* One spare set of columns: the next Batch reuses it instead of allocating. */
static Columns spare;

static void columns_free(Columns *c)
{
    free(c->offset);
    free(c->caplen);
    free(c->wirelen);
    free(c->ts);
    memset(c, 0, sizeof(*c));
}

static void columns_recycle(Columns *c)
{
    if (c->cap > spare.cap) {
        columns_free(&spare);
        spare = *c;
        spare.count = 0;
        memset(c, 0, sizeof(*c));
    } else {
        columns_free(c);
    }
}

static int columns_reserve(Columns *c, Py_ssize_t need)
{
    Py_ssize_t cap = c->cap ? c->cap : 256;
    uint32_t *o, *cl, *w;
    int64_t *t;

    if (need <= c->cap)
        return 0;
    while (cap < need)
        cap *= 2;
    o = realloc(c->offset, cap * sizeof(*o));
    if (o) c->offset = o;
    cl = realloc(c->caplen, cap * sizeof(*cl));
    if (cl) c->caplen = cl;
    w = realloc(c->wirelen, cap * sizeof(*w));
    if (w) c->wirelen = w;
    t = realloc(c->ts, cap * sizeof(*t));
    if (t) c->ts = t;
    if (!o || !cl || !w || !t) {
        PyErr_NoMemory();
        return -1;
    }
    c->cap = cap;
    return 0;
}

/* -- Batch -------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *base;       /* whose buffer holds the records; NULL once let go */
    Py_buffer view;       /* held on base while base != NULL */
    const unsigned char *buf;
    Py_ssize_t len;
    Columns cols;
    Py_ssize_t cursor;    /* records taken (packets(), take()) */
    unsigned int tstamp;
    int released;
    Py_ssize_t exports;   /* buffer exports of packets and of the batch */
    Py_ssize_t col_exports;
    PyObject *on_release; /* called with the batch when it is released */
    PyObject *views;      /* weak references to the views made here */
} BatchObject;

static int raise_released(void)
{
    PyErr_SetString(Released, "the batch was released: its buffer belongs to the kernel "
                    "again (keep data with bytes(pkt), pkt.copy() or packets(copy=True))");
    return -1;
}

static int batch_check(BatchObject *b)
{
    return b->released ? raise_released() : 0;
}

/* Give the buffer and the columns back once nothing points into them. */
static void batch_let_go(BatchObject *b)
{
    if (b->exports == 0 && b->base) {
        PyBuffer_Release(&b->view);
        Py_CLEAR(b->base);
        b->buf = NULL;
    }
    if (b->col_exports == 0 && b->cols.cap)
        columns_recycle(&b->cols);
}

static int batch_index(BatchObject *b, Py_ssize_t start, Py_ssize_t end)
{
    uint32_t off = (uint32_t)start;
    struct bsdbpf_record rec;
    Py_ssize_t n = 0;

    while (off < (uint32_t)end) {
        if (bsdbpf_record_at(b->buf, off, (uint32_t)end, b->tstamp, &rec) < 0) {
            b->cols.count = n;
            PyErr_Format(PyExc_ValueError,
                         "corrupt buffer: the record at offset %u runs past the data "
                         "length %zd (BPF timestamp format 0x%x)", off, end, b->tstamp);
            return -1;
        }
        if (n == b->cols.cap && columns_reserve(&b->cols, n + 1) < 0)
            return -1;
        b->cols.offset[n] = rec.data;
        b->cols.caplen[n] = rec.caplen;
        b->cols.wirelen[n] = rec.datalen;
        b->cols.ts[n] = rec.ts_ns;
        n++;
        off = rec.next;
    }
    b->cols.count = n;
    return 0;
}

static PyObject *batch_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buffer", "tstamp", "start", "end", "on_release", NULL};
    PyObject *buffer, *on_release = Py_None;
    unsigned int tstamp = 0;
    Py_ssize_t start = 0, end = -1;
    BatchObject *b;
    allocfunc alloc;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$InnO:Batch", kwlist, &buffer, &tstamp,
                                     &start, &end, &on_release))
        return NULL;
    alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    b = (BatchObject *)alloc(type, 0);
    if (!b)
        return NULL;
    if (PyObject_GetBuffer(buffer, &b->view, PyBUF_SIMPLE) < 0) {
        Py_DECREF((PyObject *)b);
        return NULL;
    }
    b->base = Py_NewRef(buffer);
    b->buf = b->view.buf;
    b->len = b->view.len;
    b->tstamp = tstamp;
    if (end < 0)
        end = b->len;
    if (start < 0 || start > end || end > b->len || end > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "the data [%zd, %zd) does not fit the %zd-byte buffer",
                     start, end, b->len);
        Py_DECREF((PyObject *)b);
        return NULL;
    }
    if (spare.cap) {
        b->cols = spare;
        memset(&spare, 0, sizeof(spare));
    }
    b->views = PyList_New(0);
    if (!b->views || batch_index(b, start, end) < 0) {
        Py_DECREF((PyObject *)b);
        return NULL;
    }
    if (on_release != Py_None)
        b->on_release = Py_NewRef(on_release);
    return (PyObject *)b;
}

static int batch_traverse(BatchObject *b, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE((PyObject *)b));
    Py_VISIT((PyObject *)b->on_release);
    Py_VISIT((PyObject *)b->views);
    return 0;
}

static int batch_clear(BatchObject *b)
{
    Py_CLEAR(b->on_release);
    Py_CLEAR(b->views);
    return 0;
}

static void batch_dealloc(BatchObject *b)
{
    PyTypeObject *tp = Py_TYPE((PyObject *)b);
    PyObject_GC_UnTrack(b);
    batch_clear(b);
    b->exports = b->col_exports = 0;  /* nothing can point here any more */
    batch_let_go(b);
    columns_free(&b->cols);
    ((freefunc)PyType_GetSlot(tp, Py_tp_free))(b);
    Py_DECREF(tp);
}

/* Remember a view made here, weakly (the view refers to the batch). */
static PyObject *batch_track(BatchObject *b, PyObject *view)
{
    PyObject *ref;
    if (!view)
        return NULL;
    ref = PyWeakref_NewRef(view, NULL);
    if (!ref || PyList_Append(b->views, ref) < 0) {
        Py_XDECREF(ref);
        Py_DECREF(view);
        return NULL;
    }
    Py_DECREF(ref);
    return view;
}

/* Release every view made here that still lives; a view someone exported
 * further (numpy.frombuffer(pkt.data)) cannot be released and stays valid. */
static void batch_release_views(BatchObject *b)
{
    Py_ssize_t i, n = b->views ? PyList_Size(b->views) : 0;
    for (i = 0; i < n; i++) {
        /* Calling a weak reference returns its referent, or None. */
        PyObject *view = PyObject_CallNoArgs(PyList_GetItem(b->views, i));
        PyObject *res;
        if (!view || view == Py_None) {
            Py_XDECREF(view);
            PyErr_Clear();
            continue;
        }
        res = PyObject_CallMethod(view, "release", NULL);
        Py_DECREF(view);
        if (res)
            Py_DECREF(res);
        else
            PyErr_Clear();  /* BufferError: exported further; it keeps its bytes */
    }
    if (b->views)
        PyList_SetSlice(b->views, 0, n, NULL);
}

static PyObject *batch_release(BatchObject *b, PyObject *unused)
{
    PyObject *cb, *res = NULL;
    if (b->released)
        Py_RETURN_NONE;
    b->released = 1;
    batch_release_views(b);
    cb = b->on_release;
    b->on_release = NULL;
    if (cb) {
        /* The owner gives the buffer back; it looks at `exports` first. */
        res = PyObject_CallFunctionObjArgs(cb, (PyObject *)b, NULL);
        Py_DECREF(cb);
    }
    batch_let_go(b);
    if (cb && !res)
        return NULL;
    Py_XDECREF(res);
    Py_RETURN_NONE;
}

static PyObject *batch_enter(PyObject *b, PyObject *unused)
{
    return Py_NewRef((PyObject *)b);
}

static PyObject *batch_exit(BatchObject *b, PyObject *args)
{
    return batch_release(b, NULL);
}

static Py_ssize_t batch_len(BatchObject *b)
{
    return b->cols.count - b->cursor;
}

static int batch_getbuffer(BatchObject *b, Py_buffer *view, int flags)
{
    if (batch_check(b) < 0)
        return -1;
    if (PyBuffer_FillInfo(view, (PyObject *)b, (void *)b->buf, b->len, 1, flags) < 0)
        return -1;
    b->exports++;
    return 0;
}

static void batch_releasebuffer(BatchObject *b, Py_buffer *view)
{
    b->exports--;
    if (b->released)
        batch_let_go(b);
}

static PyObject *make_stream(BatchObject *batch, PyObject *fetch, Py_ssize_t limit,
                             int mark, int copy);

static PyObject *batch_iter(BatchObject *b)
{
    if (batch_check(b) < 0)
        return NULL;
    return make_stream(b, NULL, -1, 0, 0);
}

static PyObject *batch_take(BatchObject *b, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"limit", "copy", NULL};
    PyObject *limit = Py_None;
    int copy = 0;
    Py_ssize_t n = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$p:take", kwlist, &limit, &copy))
        return NULL;
    if (limit != Py_None) {
        n = PyLong_AsSsize_t(limit);
        if (n == -1 && PyErr_Occurred())
            return NULL;
        if (n < 0)
            return PyErr_Format(PyExc_ValueError, "limit=%zd: must be >= 0 or None", n);
    }
    if (batch_check(b) < 0)
        return NULL;
    return make_stream(b, NULL, n, 1, copy);
}

static PyObject *batch_get_buffer(BatchObject *b, void *c)
{
    if (batch_check(b) < 0)
        return NULL;
    return batch_track(b, PyMemoryView_FromObject((PyObject *)b));
}

typedef struct {
    PyObject_HEAD
    BatchObject *batch;
    int which;
    Py_ssize_t shape, stride;
} ColumnObject;

static PyObject *batch_column(BatchObject *b, void *closure)
{
    ColumnObject *col;
    PyObject *view;
    if (batch_check(b) < 0)
        return NULL;
    col = PyObject_New(ColumnObject, Column_Type);
    if (!col)
        return NULL;
    col->batch = (BatchObject *)Py_NewRef((PyObject *)b);
    col->which = (int)(intptr_t)closure;
    col->shape = b->cols.count;
    col->stride = col->which == COL_TIMESTAMP ? sizeof(int64_t) : sizeof(uint32_t);
    view = PyMemoryView_FromObject((PyObject *)col);
    Py_DECREF(col);
    return batch_track(b, view);
}

static PyObject *batch_get_released(BatchObject *b, void *c)
{
    return PyBool_FromLong(b->released);
}

static PyObject *batch_get_exports(BatchObject *b, void *c)
{
    return PyLong_FromSsize_t(b->exports);
}

static PyObject *batch_get_total(BatchObject *b, void *c)
{
    return PyLong_FromSsize_t(b->cols.count);
}

static PyObject *batch_get_taken(BatchObject *b, void *c)
{
    return PyLong_FromSsize_t(b->cursor);
}

static PyObject *batch_get_tstamp(BatchObject *b, void *c)
{
    return PyLong_FromUnsignedLong(b->tstamp);
}

static PyObject *batch_repr(BatchObject *b)
{
    if (b->released)
        return PyUnicode_FromString("<Batch released>");
    return PyUnicode_FromFormat("<Batch %zd records, %zd taken>", b->cols.count, b->cursor);
}

static PyMethodDef batch_methods[] = {
    {"release", (PyCFunction)batch_release, METH_NOARGS,
     "Release the views made here and give the buffer back (idempotent).\n\n"
     "Views you derived yourself keep the bytes they showed."},
    {"take", (PyCFunction)(void (*)(void))batch_take, METH_VARARGS | METH_KEYWORDS,
     "take(limit=None, \\*, copy=False): iterate over the records not taken yet, marking\n"
     "each one taken; copy=True yields packets that own a copy of their bytes."},
    {"__enter__", (PyCFunction)batch_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)batch_exit, METH_VARARGS, NULL},
    {NULL}
};

static PyGetSetDef batch_getset[] = {
    {"buffer", (getter)batch_get_buffer, NULL,
     "The whole buffer, read-only; column offsets index into it.", NULL},
    {"offset", (getter)batch_column, NULL, "Where each packet's data starts in buffer (uint32).",
     (void *)(intptr_t)COL_OFFSET},
    {"caplen", (getter)batch_column, NULL, "Bytes captured of each packet (uint32).",
     (void *)(intptr_t)COL_CAPLEN},
    {"wirelen", (getter)batch_column, NULL, "Each packet's length on the wire (uint32).",
     (void *)(intptr_t)COL_WIRELEN},
    {"timestamp_ns", (getter)batch_column, NULL, "Each packet's timestamp in ns (int64).",
     (void *)(intptr_t)COL_TIMESTAMP},
    {"released", (getter)batch_get_released, NULL,
     "True once the buffer went back to its owner.", NULL},
    {"exports", (getter)batch_get_exports, NULL,
     "Views into the buffer still exported (packets' and the batch's).", NULL},
    {"total", (getter)batch_get_total, NULL, "Records in the buffer.", NULL},
    {"taken", (getter)batch_get_taken, NULL, "Records already taken.", NULL},
    {"tstamp", (getter)batch_get_tstamp, NULL, "The BPF_T_* word the records use.", NULL},
    {NULL}
};

static PyType_Slot batch_slots[] = {
    {Py_tp_doc, "The records of one buffer, indexed in C.\n\n"
                "Batch(buffer, \\*, tstamp=0, start=0, end=-1, on_release=None)"},
    {Py_tp_new, batch_new},
    {Py_tp_dealloc, batch_dealloc},
    {Py_tp_traverse, batch_traverse},
    {Py_tp_clear, batch_clear},
    {Py_tp_iter, batch_iter},
    {Py_tp_repr, batch_repr},
    {Py_tp_methods, batch_methods},
    {Py_tp_getset, batch_getset},
    {Py_sq_length, batch_len},
    {Py_bf_getbuffer, batch_getbuffer},
    {Py_bf_releasebuffer, batch_releasebuffer},
    {0, NULL}
};

static PyType_Spec batch_spec = {
    "bsdbpf._capture.Batch", sizeof(BatchObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE, batch_slots
};

/* -- Column: one column's buffer export --------------------------------- */

static int column_getbuffer(ColumnObject *col, Py_buffer *view, int flags)
{
    BatchObject *b = col->batch;
    void *data;
    if (batch_check(b) < 0)
        return -1;
    if (flags & PyBUF_WRITABLE) {
        PyErr_SetString(PyExc_BufferError, "batch columns are read-only");
        return -1;
    }
    switch (col->which) {
    case COL_OFFSET: data = b->cols.offset; break;
    case COL_CAPLEN: data = b->cols.caplen; break;
    case COL_WIRELEN: data = b->cols.wirelen; break;
    default: data = b->cols.ts; break;
    }
    view->obj = Py_NewRef((PyObject *)col);
    view->buf = data;
    view->len = col->shape * col->stride;
    view->readonly = 1;
    view->itemsize = col->stride;
    view->format = (flags & PyBUF_FORMAT) ? (col->which == COL_TIMESTAMP ? "q" : "I") : NULL;
    view->ndim = 1;
    view->shape = (flags & PyBUF_ND) ? &col->shape : NULL;
    view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? &col->stride : NULL;
    view->suboffsets = NULL;
    view->internal = NULL;
    b->col_exports++;
    return 0;
}

static void column_releasebuffer(ColumnObject *col, Py_buffer *view)
{
    col->batch->col_exports--;
    if (col->batch->released)
        batch_let_go(col->batch);
}

static void column_dealloc(ColumnObject *col)
{
    PyTypeObject *tp = Py_TYPE((PyObject *)col);
    Py_DECREF((PyObject *)col->batch);
    PyObject_Free(col);
    Py_DECREF(tp);
}

static PyType_Slot column_slots[] = {
    {Py_tp_dealloc, column_dealloc},
    {Py_bf_getbuffer, column_getbuffer},
    {Py_bf_releasebuffer, column_releasebuffer},
    {0, NULL}
};

static PyType_Spec column_spec = {
    "bsdbpf._capture.Column", sizeof(ColumnObject), 0, Py_TPFLAGS_DEFAULT, column_slots
};

/* -- Packet ------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *owner;  /* the BatchObject, or (a copy) the bytes holding the data */
    const unsigned char *data;
    Py_ssize_t caplen;
    int64_t ts;
    uint32_t wirelen;
    uint32_t tstamp;
    int in_batch;
} PacketObject;

static int packet_check(PacketObject *p)
{
    return p->in_batch ? batch_check((BatchObject *)p->owner) : 0;
}

static PacketObject *packet_alloc(void)
{
    return PyObject_New(PacketObject, Packet_Type);
}

/* Point `p` at record i of batch b (p->owner is NULL or released by the caller). */
static void packet_point(PacketObject *p, BatchObject *b, Py_ssize_t i)
{
    p->owner = Py_NewRef((PyObject *)b);
    p->data = b->buf + b->cols.offset[i];
    p->caplen = b->cols.caplen[i];
    p->ts = b->cols.ts[i];
    p->wirelen = b->cols.wirelen[i];
    p->tstamp = b->tstamp;
    p->in_batch = 1;
}

static PyObject *packet_standalone(PyObject *bytes, uint32_t wirelen, int64_t ts,
                                   uint32_t tstamp)
{
    PacketObject *p = packet_alloc();
    if (!p) {
        Py_DECREF(bytes);
        return NULL;
    }
    p->owner = bytes;  /* steals the reference */
    p->data = (const unsigned char *)PyBytes_AsString(bytes);
    p->caplen = PyBytes_Size(bytes);
    p->ts = ts;
    p->wirelen = wirelen;
    p->tstamp = tstamp;
    p->in_batch = 0;
    return (PyObject *)p;
}

static PyObject *packet_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "wirelen", "timestamp_ns", "tstamp", NULL};
    PyObject *data, *bytes;
    unsigned int wirelen, tstamp = 0;
    long long ts;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OIL|I:Packet", kwlist, &data, &wirelen,
                                     &ts, &tstamp))
        return NULL;
    bytes = PyBytes_FromObject(data);  /* the same object if it is bytes */
    if (!bytes)
        return NULL;
    return packet_standalone(bytes, wirelen, ts, tstamp);
}

static void packet_dealloc(PacketObject *p)
{
    PyTypeObject *tp = Py_TYPE((PyObject *)p);
    Py_XDECREF((PyObject *)p->owner);
    PyObject_Free(p);
    Py_DECREF(tp);
}

static PyObject *packet_get_caplen(PacketObject *p, void *c)
{
    if (packet_check(p) < 0)
        return NULL;
    return PyLong_FromSsize_t(p->caplen);
}

static PyObject *packet_get_wirelen(PacketObject *p, void *c)
{
    if (packet_check(p) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(p->wirelen);
}

static PyObject *packet_get_timestamp_ns(PacketObject *p, void *c)
{
    if (packet_check(p) < 0)
        return NULL;
    return PyLong_FromLongLong(p->ts);
}

static PyObject *packet_get_tstamp(PacketObject *p, void *c)
{
    if (packet_check(p) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(p->tstamp);
}

static PyObject *packet_get_monotonic(PacketObject *p, void *c)
{
    if (packet_check(p) < 0)
        return NULL;
    return PyBool_FromLong((p->tstamp & BPF_T_MONOTONIC) != 0);
}

static PyObject *packet_get_timestamp(PacketObject *p, void *c)
{
    if (packet_check(p) < 0)
        return NULL;
    return PyFloat_FromDouble((double)p->ts / 1e9);
}

static PyObject *packet_get_datetime(PacketObject *p, void *c)
{
    PyObject *mod, *res;
    if (packet_check(p) < 0)
        return NULL;
    mod = PyImport_ImportModule("bsdbpf.records");  /* rare: the date code is Python's */
    if (!mod)
        return NULL;
    res = PyObject_CallMethod(mod, "_datetime", "LI", (long long)p->ts, p->tstamp);
    Py_DECREF(mod);
    return res;
}

static PyObject *packet_get_data(PacketObject *p, void *c)
{
    if (!p->in_batch)
        return PyMemoryView_FromObject(p->owner);
    if (packet_check(p) < 0)
        return NULL;
    return batch_track((BatchObject *)p->owner, PyMemoryView_FromObject((PyObject *)p));
}

static PyObject *packet_copy(PacketObject *p, PyObject *unused)
{
    PyObject *bytes;
    if (packet_check(p) < 0)
        return NULL;
    if (!p->in_batch)
        return packet_standalone(Py_NewRef((PyObject *)p->owner), p->wirelen, p->ts, p->tstamp);
    bytes = PyBytes_FromStringAndSize((const char *)p->data, p->caplen);
    if (!bytes)
        return NULL;
    return packet_standalone(bytes, p->wirelen, p->ts, p->tstamp);
}

static PyObject *packet_bytes(PacketObject *p, PyObject *unused)
{
    if (packet_check(p) < 0)
        return NULL;
    if (!p->in_batch)
        return Py_NewRef((PyObject *)p->owner);
    return PyBytes_FromStringAndSize((const char *)p->data, p->caplen);
}

static Py_ssize_t packet_len(PacketObject *p)
{
    if (packet_check(p) < 0)
        return -1;
    return p->caplen;
}

static int packet_getbuffer(PacketObject *p, Py_buffer *view, int flags)
{
    if (packet_check(p) < 0)
        return -1;
    if (PyBuffer_FillInfo(view, (PyObject *)p, (void *)p->data, p->caplen, 1, flags) < 0)
        return -1;
    if (p->in_batch)
        ((BatchObject *)p->owner)->exports++;
    return 0;
}

static void packet_releasebuffer(PacketObject *p, Py_buffer *view)
{
    if (p->in_batch) {
        BatchObject *b = (BatchObject *)p->owner;
        b->exports--;
        if (b->released)
            batch_let_go(b);
    }
}

static PyObject *packet_repr(PacketObject *p)
{
    if (p->in_batch && ((BatchObject *)p->owner)->released)
        return PyUnicode_FromString("<Packet released>");
    return PyUnicode_FromFormat("<Packet caplen=%zd wirelen=%u timestamp_ns=%lld>",
                                p->caplen, (unsigned)p->wirelen, (long long)p->ts);
}

static PyMethodDef packet_methods[] = {
    {"copy", (PyCFunction)packet_copy, METH_NOARGS,
     "A packet that owns a copy of the data, valid for as long as you keep it."},
    {"__bytes__", (PyCFunction)packet_bytes, METH_NOARGS, NULL},
    {NULL}
};

static PyGetSetDef packet_getset[] = {
    {"caplen", (getter)packet_get_caplen, NULL, "Bytes captured (bh_caplen).", NULL},
    {"wirelen", (getter)packet_get_wirelen, NULL, "Length on the wire (bh_datalen).", NULL},
    {"timestamp_ns", (getter)packet_get_timestamp_ns, NULL,
     "Integer nanoseconds (since boot if monotonic).", NULL},
    {"tstamp", (getter)packet_get_tstamp, NULL,
     "The BPF_T_* word the record was stamped with.", NULL},
    {"monotonic", (getter)packet_get_monotonic, NULL,
     "True if the timestamp is time since boot (BPF_T_MONOTONIC*), not wall clock.", NULL},
    {"timestamp", (getter)packet_get_timestamp, NULL,
     "Seconds as a float: since the epoch, or since boot if monotonic.", NULL},
    {"datetime", (getter)packet_get_datetime, NULL,
     "The capture time as an aware UTC datetime (microsecond precision).\n\n"
     "Raises ValueError for monotonic clocks and for TimestampFormat.NONE.", NULL},
    {"data", (getter)packet_get_data, NULL,
     "A read-only memoryview of the packet's bytes (released with the batch).", NULL},
    {NULL}
};

static PyType_Slot packet_slots[] = {
    {Py_tp_doc, "One captured packet.\n\n"
                "Packet(data, wirelen, timestamp_ns, tstamp=0) makes one that owns a copy of "
                "data.\nPackets from a capture point into the kernel's buffer: valid until "
                "their batch is released."},
    {Py_tp_new, packet_new},
    {Py_tp_dealloc, packet_dealloc},
    {Py_tp_repr, packet_repr},
    {Py_tp_methods, packet_methods},
    {Py_tp_getset, packet_getset},
    {Py_sq_length, packet_len},
    {Py_bf_getbuffer, packet_getbuffer},
    {Py_bf_releasebuffer, packet_releasebuffer},
    {0, NULL}
};

static PyType_Spec packet_spec = {
    "bsdbpf._capture.Packet", sizeof(PacketObject), 0, Py_TPFLAGS_DEFAULT, packet_slots
};

/* -- Stream ------------------------------------------------------------- */

#define RECYCLED 2

typedef struct {
    PyObject_HEAD
    PyObject *fetch;        /* callable() -> Batch | None; NULL: just `batch` */
    BatchObject *batch;
    Py_ssize_t index;       /* next record when not marking */
    Py_ssize_t remaining;   /* packets still to yield; -1: no limit */
    int mark, copy, done;
    /* Packets handed out lately: one nobody else holds any more is reused,
     * so a `for` loop allocates no packet objects. */
    PacketObject *recycled[RECYCLED];
} StreamObject;

static PyObject *make_stream(BatchObject *batch, PyObject *fetch, Py_ssize_t limit,
                             int mark, int copy)
{
    StreamObject *s = PyObject_New(StreamObject, Stream_Type);
    if (!s)
        return NULL;
    s->fetch = fetch ? Py_NewRef((PyObject *)fetch) : NULL;
    s->batch = batch ? (BatchObject *)Py_NewRef((PyObject *)batch) : NULL;
    s->index = batch ? batch->cursor : 0;
    s->remaining = limit;
    s->mark = mark;
    s->copy = copy;
    s->done = 0;
    memset(s->recycled, 0, sizeof(s->recycled));
    return (PyObject *)s;
}

static PyObject *stream_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fetch", "limit", "copy", NULL};
    PyObject *fetch, *limit = Py_None;
    int copy = 0;
    Py_ssize_t n = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O$p:Stream", kwlist, &fetch, &limit,
                                     &copy))
        return NULL;
    if (!PyCallable_Check(fetch))
        return PyErr_Format(PyExc_TypeError, "Stream(fetch): fetch must be callable");
    if (limit != Py_None) {
        n = PyLong_AsSsize_t(limit);
        if (n == -1 && PyErr_Occurred())
            return NULL;
        if (n < 0)
            return PyErr_Format(PyExc_ValueError, "count=%zd: must be >= 0 or None", n);
    }
    return make_stream(NULL, fetch, n, 1, copy);
}

static void stream_dealloc(StreamObject *s)
{
    PyTypeObject *tp = Py_TYPE((PyObject *)s);
    int i;
    Py_XDECREF((PyObject *)s->fetch);
    Py_XDECREF((PyObject *)s->batch);
    for (i = 0; i < RECYCLED; i++)
        Py_XDECREF((PyObject *)s->recycled[i]);
    PyObject_Free(s);
    Py_DECREF(tp);
}

static PyObject *stream_packet(StreamObject *s, BatchObject *b, Py_ssize_t i)
{
    PacketObject *p;
    int k;
    if (s->copy) {
        PyObject *bytes = PyBytes_FromStringAndSize(
            (const char *)b->buf + b->cols.offset[i], b->cols.caplen[i]);
        if (!bytes)
            return NULL;
        return packet_standalone(bytes, b->cols.wirelen[i], b->cols.ts[i], b->tstamp);
    }
    for (k = 0; k < RECYCLED; k++) {
        p = s->recycled[k];
        if (p && Py_REFCNT((PyObject *)p) == 1) {
            Py_CLEAR(p->owner);
            packet_point(p, b, i);
            return Py_NewRef((PyObject *)p);
        }
    }
    p = packet_alloc();
    if (!p)
        return NULL;
    packet_point(p, b, i);
    /* Keep it for reuse in place of the oldest. */
    Py_XDECREF((PyObject *)s->recycled[RECYCLED - 1]);
    memmove(s->recycled + 1, s->recycled, (RECYCLED - 1) * sizeof(*s->recycled));
    s->recycled[0] = (PacketObject *)Py_NewRef((PyObject *)p);
    return (PyObject *)p;
}

static PyObject *stream_next(StreamObject *s)
{
    for (;;) {
        BatchObject *b = s->batch;
        PyObject *next;
        if (s->done || s->remaining == 0)
            return NULL;
        if (b && !b->released) {
            Py_ssize_t i = s->mark ? b->cursor : s->index;
            if (i < b->cols.count) {
                PyObject *p = stream_packet(s, b, i);
                if (!p)
                    return NULL;
                if (s->mark)
                    b->cursor++;
                else
                    s->index++;
                if (s->remaining > 0)
                    s->remaining--;
                return p;
            }
        } else if (b) {
            raise_released();
            return NULL;
        }
        Py_CLEAR(s->batch);
        if (!s->fetch) {
            s->done = 1;
            return NULL;
        }
        next = PyObject_CallNoArgs(s->fetch);
        if (!next)
            return NULL;
        if (next == Py_None) {
            Py_DECREF(next);
            s->done = 1;
            return NULL;
        }
        if (!PyObject_TypeCheck(next, Batch_Type)) {
            Py_DECREF(next);
            PyErr_SetString(PyExc_TypeError, "Stream: fetch() must return a Batch or None");
            return NULL;
        }
        s->batch = (BatchObject *)next;
    }
}

static PyObject *stream_close(StreamObject *s, PyObject *unused)
{
    s->done = 1;
    Py_CLEAR(s->batch);
    Py_RETURN_NONE;
}

static PyMethodDef stream_methods[] = {
    {"close", (PyCFunction)stream_close, METH_NOARGS,
     "Stop: later next() calls end the iteration (the batch stays the descriptor's)."},
    {NULL}
};

static PyType_Slot stream_slots[] = {
    {Py_tp_doc, "Stream(fetch, limit=None, \\*, copy=False): packets of the batches fetch() "
                "returns, until it returns None."},
    {Py_tp_new, stream_new},
    {Py_tp_dealloc, stream_dealloc},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, stream_next},
    {Py_tp_methods, stream_methods},
    {0, NULL}
};

static PyType_Spec stream_spec = {
    "bsdbpf._capture.Stream", sizeof(StreamObject), 0, Py_TPFLAGS_DEFAULT, stream_slots
};

/* -- zero-copy mappings -------------------------------------------------- */

static PyObject *shared_memory(PyObject *mod, PyObject *arg)
{
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    int fd;
    if (size == -1 && PyErr_Occurred())
        return NULL;
#if defined(__FreeBSD__)
    fd = shm_open(SHM_ANON, O_RDWR | O_CLOEXEC, 0600);
#elif defined(__linux__)
    fd = memfd_create("bsdbpf-zbuf", MFD_CLOEXEC);
#else
    errno = ENOSYS;
    fd = -1;
#endif
    if (fd < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (ftruncate(fd, size) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(fd);
}

/* Replace the mapping under `obj`'s buffer by a private copy of its current
 * contents: the pages of shared-memory `fd` at `offset` are mapped privately
 * over it and each page is written once, which copies it.  Afterwards the
 * views into that mapping no longer see what is written to the object. */
static PyObject *freeze(PyObject *mod, PyObject *args)
{
    PyObject *obj;
    int fd;
    long long offset;
    Py_buffer view;
    long page = sysconf(_SC_PAGESIZE);
    volatile unsigned char *p;
    Py_ssize_t i;
    void *got;
    if (!PyArg_ParseTuple(args, "OiL:freeze", &obj, &fd, &offset))
        return NULL;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if ((uintptr_t)view.buf % page || view.len % page) {
        PyBuffer_Release(&view);
        return PyErr_Format(PyExc_ValueError, "freeze: the buffer is not whole pages");
    }
    got = mmap(view.buf, view.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd,
               (off_t)offset);
    if (got == MAP_FAILED) {
        PyBuffer_Release(&view);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    p = view.buf;
    for (i = 0; i < view.len; i += page)
        p[i] = p[i];  /* the write fault copies the page */
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"shared_memory", shared_memory, METH_O,
     "shared_memory(size) -> fd: an anonymous shared memory object of size bytes "
     "(memfd on Linux, SHM_ANON on FreeBSD)."},
    {"freeze", freeze, METH_VARARGS,
     "freeze(mapping, fd, offset): make the mapping a private copy of its contents."},
    {NULL}
};

static struct PyModuleDef capture_module = {
    PyModuleDef_HEAD_INIT, "bsdbpf._capture",
    "The record layer of the capture path (Batch, Packet, Stream), in C.", -1,
    module_methods
};

static int add_type(PyObject *m, PyTypeObject **slot, PyType_Spec *spec, const char *name)
{
    *slot = (PyTypeObject *)PyType_FromSpec(spec);
    if (!*slot)
        return -1;
    return PyModule_AddObjectRef(m, name, (PyObject *)*slot);
}

PyMODINIT_FUNC PyInit__capture(void)
{
    PyObject *m = PyModule_Create(&capture_module), *bases;
    if (!m)
        return NULL;
    if (add_type(m, &Batch_Type, &batch_spec, "Batch") < 0 ||
        add_type(m, &Packet_Type, &packet_spec, "Packet") < 0 ||
        add_type(m, &Stream_Type, &stream_spec, "Stream") < 0 ||
        add_type(m, &Column_Type, &column_spec, "Column") < 0)
        goto fail;
    bases = PyTuple_Pack(2, PyExc_ValueError, PyExc_BufferError);
    if (!bases)
        goto fail;
    Released = PyErr_NewExceptionWithDoc(
        "bsdbpf._capture.Released",
        "A packet, batch or view was used after its batch was released.", bases, NULL);
    Py_DECREF(bases);
    if (!Released || PyModule_AddObjectRef(m, "Released", Released) < 0)
        goto fail;
    if (PyModule_AddIntConstant(m, "COLUMNS", NCOLUMNS) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
