/* midi_stamp: a JACK MIDI input that prints every message it gets, stamped on
 * CLOCK_MONOTONIC_RAW (Ableton Link's clock on Linux), one line each:
 *
 *     <microseconds> <JACK frame> <hex bytes...>
 *
 * The process callback is plain C (no interpreter lock to wait for), so on a loaded
 * machine it does not miss cycles, and JACK drops none of its MIDI. The time of a message
 * is the cycle's start (the clock now, less the frames JACK says have passed since the
 * cycle began) plus the message's offset in the cycle.
 *
 * Build (no JACK headers needed: the few functions used are declared here):
 *     cc -O2 -o midi_stamp midi_stamp.c -l:libjack.so.0
 * Run: midi_stamp CLIENT_NAME    (the input is CLIENT_NAME:input; SIGTERM ends it)
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef uint32_t jack_nframes_t;
typedef struct _jack_client jack_client_t;
typedef struct _jack_port jack_port_t;
typedef struct {
    jack_nframes_t time;
    size_t size;
    unsigned char *buffer;
} jack_midi_event_t;

extern jack_client_t *jack_client_open(const char *name, int options, int *status, ...);
extern jack_port_t *jack_port_register(jack_client_t *, const char *, const char *,
                                       unsigned long, unsigned long);
extern int jack_set_process_callback(jack_client_t *, int (*)(jack_nframes_t, void *), void *);
extern int jack_activate(jack_client_t *);
extern int jack_deactivate(jack_client_t *);
extern int jack_client_close(jack_client_t *);
extern void *jack_port_get_buffer(jack_port_t *, jack_nframes_t);
extern uint32_t jack_midi_get_event_count(void *);
extern int jack_midi_event_get(jack_midi_event_t *, void *, uint32_t);
extern jack_nframes_t jack_last_frame_time(const jack_client_t *);
extern jack_nframes_t jack_frames_since_cycle_start(const jack_client_t *);
extern jack_nframes_t jack_get_sample_rate(jack_client_t *);

#define JACK_NO_START_SERVER 0x01
#define JACK_PORT_IS_INPUT 0x1
#define RING 65536 /* messages; a power of two */
#define MAX_BYTES 3 /* clock, start, stop, notes: longer messages are cut */

typedef struct {
    double us;
    uint32_t frame;
    uint8_t size;
    uint8_t data[MAX_BYTES];
} stamp_t;

static stamp_t ring[RING];
static atomic_uint head, tail; /* written by the callback / by main */
static atomic_uint overflows;
static jack_client_t *client;
static jack_port_t *port;
static double us_per_frame;
static volatile sig_atomic_t stop;

static double raw_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int process(jack_nframes_t frames, void *arg) {
    (void)arg;
    double start = raw_us() - jack_frames_since_cycle_start(client) * us_per_frame;
    jack_nframes_t base = jack_last_frame_time(client);
    void *buffer = jack_port_get_buffer(port, frames);
    uint32_t n = jack_midi_get_event_count(buffer);
    for (uint32_t i = 0; i < n; i++) {
        jack_midi_event_t event;
        if (jack_midi_event_get(&event, buffer, i) != 0) continue;
        unsigned h = atomic_load_explicit(&head, memory_order_relaxed);
        if (h - atomic_load_explicit(&tail, memory_order_acquire) >= RING) {
            atomic_fetch_add(&overflows, 1);
            continue;
        }
        stamp_t *s = &ring[h % RING];
        s->us = start + event.time * us_per_frame;
        s->frame = base + event.time;
        s->size = event.size < MAX_BYTES ? (uint8_t)event.size : MAX_BYTES;
        memcpy(s->data, event.buffer, s->size);
        atomic_store_explicit(&head, h + 1, memory_order_release);
    }
    return 0;
}

static void on_signal(int sig) { (void)sig; stop = 1; }

static void drain(void) {
    unsigned h = atomic_load_explicit(&head, memory_order_acquire);
    unsigned t = atomic_load_explicit(&tail, memory_order_relaxed);
    for (; t != h; t++) {
        stamp_t *s = &ring[t % RING];
        printf("%.3f %u", s->us, s->frame);
        for (int i = 0; i < s->size; i++) printf(" %02x", s->data[i]);
        printf("\n");
    }
    atomic_store_explicit(&tail, t, memory_order_release);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: midi_stamp CLIENT_NAME\n");
        return 2;
    }
    int status = 0;
    client = jack_client_open(argv[1], JACK_NO_START_SERVER, &status);
    if (!client) {
        fprintf(stderr, "midi_stamp: no JACK server (status 0x%x)\n", status);
        return 1;
    }
    us_per_frame = 1e6 / jack_get_sample_rate(client);
    port = jack_port_register(client, "input", "8 bit raw midi", JACK_PORT_IS_INPUT, 0);
    if (!port || jack_set_process_callback(client, process, NULL) || jack_activate(client)) {
        fprintf(stderr, "midi_stamp: could not open the input\n");
        return 1;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    printf("ready\n");
    fflush(stdout);
    while (!stop) {
        usleep(2000);
        drain();
    }
    jack_deactivate(client);
    drain();
    if (atomic_load(&overflows)) printf("overflows %u\n", atomic_load(&overflows));
    fflush(stdout);
    jack_client_close(client);
    return 0;
}
