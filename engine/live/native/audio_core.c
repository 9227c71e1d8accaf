/*
 * Encore's real-time audio core: the per-block work of the live audio output, in C, so
 * that the audio callback never waits for the Python interpreter.
 *
 * PortAudio calls encore_core_pa_callback (on JACK: in JACK's real-time process thread).
 * For each block of n frames starting at output frame F it does what the Python
 * reference callback (engine/live/audio_out.py, AudioEngine._process) does, with the
 * same float32 arithmetic in the same order (built with -ffp-contract=off, no fast
 * math), so both give the same samples:
 *
 *   1. control requests (panic / stop: drop queued events, silence the channels);
 *   2. synth events stamped for frames F .. F+n-1 applied at their sample offsets:
 *      FluidSynth renders up to an event's offset, the event is sent, and so on; an
 *      event stamped before F is applied at the block start and counted late;
 *   3. the vocal ring (absolute frames) mixed in;
 *   4. the master level (ramped over a block) and the peak limiter + soft clipper;
 *   5. the block copied to the output and to the recording tap;
 *   6. counters: underruns (PortAudio's output-underflow flag), callbacks longer than
 *      the block, durations, the frame <-> monotonic-time pairs of the clock.
 *
 * Python feeds it without locks: synth events through a single-producer /
 * single-consumer ring (the Python side serialises its producers with a lock the audio
 * thread never takes); vocal samples through the VocalRing's memory (the producer adds
 * at frames ahead of the read position, the core reads and zeroes); the recording tap
 * is a ring the core writes and a Python thread drains; control values are single
 * words. Counters are plain 64-bit words the core stores and Python reads.
 *
 * No header of PortAudio or FluidSynth is needed: the few FluidSynth functions are
 * passed in as pointers (those of the library pyfluidsynth loaded), and the PortAudio
 * callback's types are declared here (they are PortAudio's stable ABI, v19).
 * The callback never allocates, locks, or makes a system call other than reading the
 * monotonic clock (and, in tests only, the stall that provokes underruns).
 */

#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ENCORE_CORE_ABI 3

/* ---------------------------------------------------------------- PortAudio's ABI */

typedef struct {
    double inputBufferAdcTime;
    double currentTime;
    double outputBufferDacTime;
} PaTimeInfo;

#define PA_OUTPUT_UNDERFLOW 0x00000004UL
#define PA_CONTINUE 0

/* ---------------------------------------------------------------- FluidSynth */

typedef int (*fl_write_float_t)(void *, int, void *, int, int, void *, int, int);
typedef int (*fl_3i_t)(void *, int, int, int);
typedef int (*fl_2i_t)(void *, int, int);
typedef int (*fl_program_select_t)(void *, int, int, int, int);
typedef int (*fl_voices_t)(void *);

/* ---------------------------------------------------------------- shared words */

enum {  /* int64 counters (Python: engine/live/audio_core.py, STAT_NAMES) */
    ST_FRAME, ST_CALLBACKS, ST_UNDERRUNS, ST_OVERRUNS, ST_MAX_NS, ST_APPLIED, ST_LATE,
    ST_MAX_LATE, ST_CANCELLED, ST_EVENT_ERRORS, ST_ERRORS, ST_VOICES, ST_LAST_CALLBACK_NS,
    ST_LAST_FRAMES, ST_LATENCY_NS, ST_LIM_ACTIVE, ST_LIM_CLIPPED, ST_LIM_NONFINITE,
    ST_QUEUED, ST_LAST_ERROR, ST_COUNT
};
enum { FL_MASTER_TARGET, FL_MASTER_CUR, FL_LIM_GAIN, FL_LIM_MIN_GAIN, FL_COUNT };
enum { ERR_NONE, ERR_BLOCK_TOO_LARGE };
enum { VS_READ, VS_DISCARD_REQ, VS_DISCARD_DONE };

#define CLOCK_WINDOW 128
#define DURATION_WINDOW 4096

enum { K_PROGRAM, K_CC, K_PITCH_BEND, K_NOTE_OFF, K_NOTE_ON };

typedef struct {
    int64_t frame;
    int64_t seq;
    int32_t order;
    int32_t gen;
    int32_t kind;
    int32_t channel;
    int32_t data1;
    int32_t data2;
} Event;

typedef struct {           /* the recording tap (TapRing's memory) */
    float *data;           /* (capacity, 2) */
    int64_t capacity;
    int64_t *written;      /* frames written so far: the core stores, Python reads */
} Tap;

typedef struct {
    int rate;
    int max_frames;
    float *buf;            /* (max_frames, 2): the block being made */
    float *work;           /* (max_frames, 2): |block| for the limiter */
    float *work2;          /* (max_frames, 2) */
    float *gains;          /* (max_frames): master / limiter gain ramps */

    /* FluidSynth */
    void *synth;
    int sfid;
    fl_write_float_t write_float;
    fl_3i_t noteon, cc;
    fl_2i_t noteoff, pitch_bend, set_channel_type;
    fl_program_select_t program_select;
    fl_voices_t voices;

    /* events: an SPSC ring (Python -> core), then a heap ordered by (frame, order, seq) */
    Event *ring;
    uint64_t ring_mask;
    uint64_t head;         /* producer */
    uint64_t tail;         /* consumer */
    int64_t seq;           /* producer */
    int64_t max_events;
    Event *heap;
    int64_t heap_len, heap_cap;
    int32_t gen_req;       /* producer: bumped by panic / stop */
    int32_t gen_seen;
    int64_t hard_req;      /* producer: all-sound-off requests */
    int64_t hard_done;

    /* vocals (VocalRing's memory) */
    float *voc;
    int64_t voc_cap;
    int64_t *voc_state;

    Tap *tap;              /* NULL: not recording */

    /* limiter */
    double threshold, ceiling, release_s;
    double head_room;      /* ceiling - threshold */
    int attack_frames;

    /* shared counters and clock */
    int64_t *st;
    double *fl;
    int64_t *durations;
    int64_t *clock_offsets;
    double *clock_pairs;   /* (CLOCK_WINDOW, 4) */

    /* tests only: every stall_every-th block sleeps stall_us */
    int64_t stall_every, stall_us, stall_count;
} Core;

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define RLOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define RSTORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

static int64_t monotonic_ns(void) {
    struct timespec ts;
#ifdef __APPLE__
    clock_gettime(CLOCK_UPTIME_RAW, &ts);  /* what Python's time.monotonic uses there */
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void st_add(Core *c, int i, int64_t v) { RSTORE(&c->st[i], RLOAD(&c->st[i]) + v); }

static double fl_get(Core *c, int i) {
    double v;
    __atomic_load(&c->fl[i], &v, __ATOMIC_RELAXED);
    return v;
}

static void fl_set(Core *c, int i, double v) { __atomic_store(&c->fl[i], &v, __ATOMIC_RELAXED); }

/* ---------------------------------------------------------------- life cycle */

int encore_core_abi(void) { return ENCORE_CORE_ABI; }

void encore_core_free(Core *c) {
    if (!c) return;
    free(c->buf);
    free(c->work);
    free(c->work2);
    free(c->gains);
    free(c->ring);
    free(c->heap);
    free(c);
}

Core *encore_core_new(int rate, int max_frames, int64_t max_events) {
    if (rate <= 0 || max_frames <= 0 || max_events <= 0) return NULL;
    Core *c = calloc(1, sizeof(Core));
    if (!c) return NULL;
    c->rate = rate;
    c->max_frames = max_frames;
    uint64_t cap = 1;
    while (cap < (uint64_t)max_events) cap <<= 1;
    c->ring_mask = cap - 1;
    c->max_events = max_events;
    c->heap_cap = max_events + (int64_t)cap;
    c->buf = calloc((size_t)max_frames * 2, sizeof(float));
    c->work = calloc((size_t)max_frames * 2, sizeof(float));
    c->work2 = calloc((size_t)max_frames * 2, sizeof(float));
    c->gains = calloc((size_t)max_frames, sizeof(float));
    c->ring = calloc(cap, sizeof(Event));
    c->heap = calloc((size_t)c->heap_cap, sizeof(Event));
    if (!c->buf || !c->work || !c->work2 || !c->gains || !c->ring || !c->heap) {
        encore_core_free(c);
        return NULL;
    }
    c->threshold = 0.89;
    c->ceiling = 0.98;
    c->release_s = 0.15;
    c->attack_frames = 32;
    c->head_room = c->ceiling - c->threshold;
    return c;
}

void encore_core_bind_counters(Core *c, int64_t *st, double *fl, int64_t *durations,
                               int64_t *clock_offsets, double *clock_pairs) {
    c->st = st;
    c->fl = fl;
    c->durations = durations;
    c->clock_offsets = clock_offsets;
    c->clock_pairs = clock_pairs;
}

void encore_core_bind_synth(Core *c, void *synth, int sfid, void *write_float, void *noteon,
                            void *noteoff, void *cc, void *pitch_bend, void *program_select,
                            void *set_channel_type, void *voices) {
    c->synth = synth;
    c->sfid = sfid;
    c->write_float = (fl_write_float_t)write_float;
    c->noteon = (fl_3i_t)noteon;
    c->noteoff = (fl_2i_t)noteoff;
    c->cc = (fl_3i_t)cc;
    c->pitch_bend = (fl_2i_t)pitch_bend;
    c->program_select = (fl_program_select_t)program_select;
    c->set_channel_type = (fl_2i_t)set_channel_type;
    c->voices = (fl_voices_t)voices;
}

void encore_core_bind_vocals(Core *c, float *data, int64_t capacity, int64_t *state) {
    c->voc = data;
    c->voc_cap = capacity;
    c->voc_state = state;
}

void encore_core_set_limiter(Core *c, double threshold, double ceiling, int attack_frames,
                             double release_s) {
    c->threshold = threshold;
    c->ceiling = ceiling;
    c->attack_frames = attack_frames;
    c->release_s = release_s;
    c->head_room = ceiling - threshold;
}

/* The tap descriptor lives in Python memory (kept alive there while set). */
void encore_core_set_tap(Core *c, Tap *tap) { STORE(&c->tap, tap); }

void encore_core_set_stall(Core *c, int64_t every, int64_t usec) {
    c->stall_us = usec;
    c->stall_count = 0;
    STORE(&c->stall_every, every);
}

/* ---------------------------------------------------------------- producer side */

/* Queue one event (the caller serialises producers). 1: queued, 0: the queue is full. */
int encore_core_push(Core *c, int64_t frame, int order, int kind, int channel, int data1,
                     int data2) {
    uint64_t head = c->head;
    uint64_t tail = LOAD(&c->tail);
    int64_t queued = (int64_t)(head - tail) + RLOAD(&c->st[ST_QUEUED]);
    if (queued >= c->max_events || head - tail > c->ring_mask) return 0;
    Event *e = &c->ring[head & c->ring_mask];
    e->frame = frame;
    e->seq = c->seq++;
    e->order = order;
    e->gen = RLOAD(&c->gen_req);
    e->kind = kind;
    e->channel = channel;
    e->data1 = data1;
    e->data2 = data2;
    STORE(&c->head, head + 1);
    return 1;
}

/* Events waiting (ring + heap), as the producer sees them. */
int64_t encore_core_queued(Core *c) {
    return (int64_t)(LOAD(&c->head) - LOAD(&c->tail)) + RLOAD(&c->st[ST_QUEUED]);
}

/* panic / stop: events queued so far are dropped; hard: all sound off too. */
void encore_core_bump(Core *c, int hard) {
    if (hard) STORE(&c->hard_req, RLOAD(&c->hard_req) + 1);
    STORE(&c->gen_req, RLOAD(&c->gen_req) + 1);
}

void encore_core_request_hard(Core *c) { STORE(&c->hard_req, RLOAD(&c->hard_req) + 1); }

/* ---------------------------------------------------------------- events */

static int ev_less(const Event *a, const Event *b) {
    if (a->frame != b->frame) return a->frame < b->frame;
    if (a->order != b->order) return a->order < b->order;
    return a->seq < b->seq;
}

static void heap_push(Core *c, const Event *e) {
    int64_t i = c->heap_len++;
    Event *h = c->heap;
    while (i > 0) {
        int64_t parent = (i - 1) / 2;
        if (!ev_less(e, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = *e;
}

static void heap_pop(Core *c, Event *out) {
    Event *h = c->heap;
    *out = h[0];
    Event last = h[--c->heap_len];
    int64_t n = c->heap_len, i = 0;
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, m = i;
        const Event *best = &last;
        if (l < n && ev_less(&h[l], best)) { m = l; best = &h[l]; }
        if (r < n && ev_less(&h[r], best)) { m = r; }
        if (m == i) break;
        h[i] = h[m];
        i = m;
    }
    if (n > 0) h[i] = last;
}

static void silence(Core *c, int hard) {
    for (int ch = 0; ch < 16; ch++) {
        c->cc(c->synth, ch, 64, 0);
        c->cc(c->synth, ch, 123, 0);
        if (hard) {
            c->cc(c->synth, ch, 120, 0);
            c->cc(c->synth, ch, 121, 0);
        }
    }
}

static void apply_control(Core *c) {
    int32_t gen = LOAD(&c->gen_req);
    int64_t hard_req = LOAD(&c->hard_req);
    if (gen != c->gen_seen) {
        c->gen_seen = gen;
        st_add(c, ST_CANCELLED, c->heap_len);
        c->heap_len = 0;
        int hard = hard_req != c->hard_done;
        c->hard_done = hard_req;
        silence(c, hard);
    } else if (hard_req != c->hard_done) {
        c->hard_done = hard_req;
        silence(c, 1);
    }
}

static int send_event(Core *c, const Event *e) {
    void *s = c->synth;
    switch (e->kind) {
    case K_NOTE_ON:
        if (e->data2 > 0) c->noteon(s, e->channel, e->data1, e->data2);
        else c->noteoff(s, e->channel, e->data1);
        return 0;
    case K_NOTE_OFF:
        c->noteoff(s, e->channel, e->data1);
        return 0;
    case K_CC:
        c->cc(s, e->channel, e->data1, e->data2);
        return 0;
    case K_PITCH_BEND: {
        int v = e->data1 + 8192;
        c->pitch_bend(s, e->channel, v < 0 ? 0 : (v > 16383 ? 16383 : v));
        return 0;
    }
    case K_PROGRAM: {
        int bank = e->data2;
        if (bank < 0) bank = e->channel == 9 ? 128 : 0;
        if (c->set_channel_type) c->set_channel_type(s, e->channel, bank == 128 ? 1 : 0);
        return c->program_select(s, e->channel, c->sfid, bank, e->data1) != 0 ? -1 : 0;
    }
    default:
        return -1;
    }
}

static void render(Core *c, int pos, int frames) {
    c->write_float(c->synth, frames, c->buf, 2 * pos, 2, c->buf, 2 * pos + 1, 2);
}

/* ---------------------------------------------------------------- vocals */

static void mix_vocals(Core *c, float *out, int n, int64_t frame) {
    float *ring = c->voc;
    int64_t cap = c->voc_cap;
    int64_t *vs = c->voc_state;
    if (!ring || cap <= 0) return;
    int64_t req = LOAD(&vs[VS_DISCARD_REQ]);
    if (req != RLOAD(&vs[VS_DISCARD_DONE])) {
        RSTORE(&vs[VS_DISCARD_DONE], req);
        memset(ring, 0, (size_t)cap * 2 * sizeof(float));
    }
    int64_t read = RLOAD(&vs[VS_READ]);
    if (frame > read) {  /* frames skipped: clear their slots */
        int64_t gap = frame - read < cap ? frame - read : cap;
        int64_t s = read % cap;
        int64_t k = gap < cap - s ? gap : cap - s;
        memset(ring + 2 * s, 0, (size_t)k * 2 * sizeof(float));
        if (k < gap) memset(ring, 0, (size_t)(gap - k) * 2 * sizeof(float));
    }
    int64_t s = frame % cap;
    int64_t k = n < cap - s ? n : cap - s;
    float *part = ring + 2 * s;
    for (int64_t i = 0; i < 2 * k; i++) {
        out[i] = out[i] + part[i];
        part[i] = 0.0f;
    }
    if (k < n) {
        for (int64_t i = 0; i < 2 * (n - k); i++) {
            out[2 * k + i] = out[2 * k + i] + ring[i];
            ring[i] = 0.0f;
        }
    }
    STORE(&vs[VS_READ], frame + n);
}

/* ---------------------------------------------------------------- levels */

static void master_level(Core *c, float *block, int n) {
    double target = fl_get(c, FL_MASTER_TARGET);
    double current = fl_get(c, FL_MASTER_CUR);
    if (current != target) {
        float step = (float)((target - current) / n);
        float base = (float)current;
        for (int i = 0; i < n; i++) {
            float g = (float)(i + 1) * step;
            g = g + base;
            block[2 * i] *= g;
            block[2 * i + 1] *= g;
        }
        fl_set(c, FL_MASTER_CUR, target);
    } else if (target != 1.0) {
        float g = (float)target;
        for (int i = 0; i < 2 * n; i++) block[i] *= g;
    }
}

static void limit(Core *c, float *block, int n) {
    if (n == 0) return;
    float *absb = c->work;
    float peak_f = 0.0f;
    int finite = 1;
    for (int i = 0; i < 2 * n; i++) {
        float a = fabsf(block[i]);
        absb[i] = a;
        if (!isfinite(a)) finite = 0;
        else if (a > peak_f) peak_f = a;
    }
    if (!finite) {
        memset(block, 0, (size_t)n * 2 * sizeof(float));
        st_add(c, ST_LIM_NONFINITE, 1);
        return;
    }
    double peak = peak_f;
    double g_prev = fl_get(c, FL_LIM_GAIN);
    double target = peak > c->threshold ? c->threshold / peak : 1.0;
    int attack = target < g_prev;
    double g_new;
    if (attack) {
        g_new = target;
    } else {
        double coef = 1.0 - exp(-(double)n / (c->release_s * c->rate));
        g_new = g_prev + (1.0 - g_prev) * coef;
        if (target < g_new) g_new = target;
        if (g_new > 0.9999) g_new = 1.0;
    }
    fl_set(c, FL_LIM_GAIN, g_new);
    if (g_prev != 1.0 || g_new != 1.0) {
        st_add(c, ST_LIM_ACTIVE, 1);
        if (g_new < fl_get(c, FL_LIM_MIN_GAIN)) fl_set(c, FL_LIM_MIN_GAIN, g_new);
        float *gv = c->gains;
        if (attack) {  /* g_prev -> g_new within attack_frames, then flat */
            float span = (float)(g_prev - g_new), base = (float)g_new;
            float af = (float)c->attack_frames;
            for (int i = 0; i < n; i++) {
                float shape = 1.0f - (float)(i + 1) / af;
                if (shape < 0.0f) shape = 0.0f;
                if (shape > 1.0f) shape = 1.0f;
                float g = shape * span;
                gv[i] = g + base;
            }
        } else {       /* a straight line over the block */
            float step = (float)((g_new - g_prev) / n), base = (float)g_prev;
            for (int i = 0; i < n; i++) {
                float g = (float)(i + 1) * step;
                gv[i] = g + base;
            }
        }
        for (int i = 0; i < n; i++) {
            block[2 * i] *= gv[i];
            block[2 * i + 1] *= gv[i];
        }
        peak *= g_prev > g_new ? g_prev : g_new;
    }
    if (peak > c->threshold) {  /* soft-clip what the gain ramp let through */
        st_add(c, ST_LIM_CLIPPED, 1);
        float thr = (float)c->threshold;
        float inv = (float)(1.0 / c->head_room);
        float head = (float)c->head_room;
        for (int i = 0; i < 2 * n; i++) {
            float a = fabsf(block[i]);
            float over = a - thr;
            if (over < 0.0f) over = 0.0f;
            over *= inv;
            over = tanhf(over);
            over *= head;
            if (a > thr) a = thr;
            a += over;
            block[i] = copysignf(a, block[i]);
        }
    }
}

/* ---------------------------------------------------------------- the block */

static void process(Core *c, float *out, int frames, double dac, double current,
                    int underflow) {
    int64_t start = RLOAD(&c->st[ST_FRAME]);
    int64_t now = monotonic_ns();
    int64_t calls = RLOAD(&c->st[ST_CALLBACKS]);
    if (underflow) {
        st_add(c, ST_UNDERRUNS, 1);
        for (int i = 0; i < CLOCK_WINDOW; i++) RSTORE(&c->clock_offsets[i], INT64_MAX);
    }
    int k = (int)(calls % CLOCK_WINDOW);
    int64_t rate = c->rate;
    int64_t start_ns = (start / rate) * 1000000000LL + (start % rate) * 1000000000LL / rate;
    RSTORE(&c->clock_offsets[k], now - start_ns);
    double *row = &c->clock_pairs[4 * k];
    row[0] = (double)now;
    row[1] = (double)start;
    row[2] = dac;
    row[3] = current;
    if (dac - current > 0.0 && dac - current < 1.0)
        RSTORE(&c->st[ST_LATENCY_NS], (int64_t)((dac - current) * 1e9));
    int64_t every = LOAD(&c->stall_every);
    if (every > 0 && ++c->stall_count % every == 0) {
        struct timespec ts = {c->stall_us / 1000000, (c->stall_us % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
    if (frames > c->max_frames) {
        memset(out, 0, (size_t)frames * 2 * sizeof(float));
        st_add(c, ST_ERRORS, 1);
        RSTORE(&c->st[ST_LAST_ERROR], ERR_BLOCK_TOO_LARGE);
        return;
    }

    if (LOAD(&c->gen_req) != c->gen_seen || LOAD(&c->hard_req) != c->hard_done)
        apply_control(c);
    uint64_t head = LOAD(&c->head), tail = c->tail;
    while (tail != head && c->heap_len < c->heap_cap) {
        heap_push(c, &c->ring[tail & c->ring_mask]);
        tail++;
    }
    STORE(&c->tail, tail);

    int64_t end = start + frames;
    int pos = 0;
    Event e;
    while (c->heap_len && c->heap[0].frame < end) {
        heap_pop(c, &e);
        if (e.gen != c->gen_seen) {
            st_add(c, ST_CANCELLED, 1);
            continue;
        }
        int64_t offset = e.frame - start;
        if (offset < 0) {
            st_add(c, ST_LATE, 1);
            if (-offset > RLOAD(&c->st[ST_MAX_LATE])) RSTORE(&c->st[ST_MAX_LATE], -offset);
            offset = 0;
        }
        if (offset > pos) {
            render(c, pos, (int)offset - pos);
            pos = (int)offset;
        }
        if (send_event(c, &e) != 0) st_add(c, ST_EVENT_ERRORS, 1);
        else st_add(c, ST_APPLIED, 1);
    }
    RSTORE(&c->st[ST_QUEUED], c->heap_len);
    if (pos < frames) render(c, pos, frames - pos);

    float *block = c->buf;
    mix_vocals(c, block, frames, start);
    master_level(c, block, frames);
    limit(c, block, frames);
    memcpy(out, block, (size_t)frames * 2 * sizeof(float));
    Tap *tap = LOAD(&c->tap);
    if (tap) {
        int64_t written = RLOAD(tap->written);
        int64_t s = written % tap->capacity;
        int64_t first = frames < tap->capacity - s ? frames : tap->capacity - s;
        memcpy(tap->data + 2 * s, block, (size_t)first * 2 * sizeof(float));
        if (first < frames)
            memcpy(tap->data, block + 2 * first, (size_t)(frames - first) * 2 * sizeof(float));
        STORE(tap->written, written + frames);
    }
    RSTORE(&c->st[ST_VOICES], c->voices(c->synth));
}

/* One block, as the PortAudio callback does it (also called directly by tests and the
 * offline reference comparison, while no stream runs). */
void encore_core_process(Core *c, float *out, int frames, double dac, double current,
                         int underflow) {
    int64_t t0 = monotonic_ns();
    int64_t start = RLOAD(&c->st[ST_FRAME]);
    process(c, out, frames, dac, current, underflow);
    int64_t t1 = monotonic_ns();
    STORE(&c->st[ST_FRAME], start + frames);
    RSTORE(&c->st[ST_LAST_FRAMES], frames);
    RSTORE(&c->st[ST_LAST_CALLBACK_NS], t1);
    int64_t dt = t1 - t0;
    int64_t calls = RLOAD(&c->st[ST_CALLBACKS]);
    RSTORE(&c->durations[calls % DURATION_WINDOW], dt);
    if (dt * (int64_t)c->rate > (int64_t)frames * 1000000000LL) st_add(c, ST_OVERRUNS, 1);
    if (dt > RLOAD(&c->st[ST_MAX_NS])) RSTORE(&c->st[ST_MAX_NS], dt);
    STORE(&c->st[ST_CALLBACKS], calls + 1);
}

int encore_core_pa_callback(const void *input, void *output, unsigned long frames,
                            const PaTimeInfo *time_info, unsigned long status, void *user) {
    (void)input;
    encore_core_process((Core *)user, (float *)output, (int)frames,
                        time_info ? time_info->outputBufferDacTime : 0.0,
                        time_info ? time_info->currentTime : 0.0,
                        (status & PA_OUTPUT_UNDERFLOW) != 0);
    return PA_CONTINUE;
}

/* While no stream runs: apply pending control requests now and drop every queued
 * event (as the reference engine does when it is stopped). */
void encore_core_offline_control(Core *c, int drop_queue) {
    apply_control(c);
    if (drop_queue) {
        if (c->heap_len) st_add(c, ST_CANCELLED, c->heap_len);
        c->heap_len = 0;
        STORE(&c->tail, LOAD(&c->head));
        RSTORE(&c->st[ST_QUEUED], 0);
    }
}

/* After the stream is closed: drop queued events (counted as cancelled), mark every
 * control request as done. */
void encore_core_after_stop(Core *c) {
    uint64_t head = LOAD(&c->head);
    st_add(c, ST_CANCELLED, c->heap_len);
    c->heap_len = 0;
    STORE(&c->tail, head);
    RSTORE(&c->st[ST_QUEUED], 0);
    c->gen_seen = LOAD(&c->gen_req);
    c->hard_done = LOAD(&c->hard_req);
}
