/*
 * thread_leak: a producer thread queues a 256 B message every millisecond; a consumer thread
 * handles and frees them, except that every fifth message takes a path that drops it unfreed.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

struct message {
    struct message *next;
    unsigned long sequence;
    char payload[256 - sizeof(struct message *) - sizeof(unsigned long)];
};

_Static_assert(sizeof(struct message) == 256, "a message is 256 bytes");

struct queue {
    pthread_mutex_t lock;
    pthread_cond_t ready;
    struct message *head;
    struct message *tail;
    int closed;
};

struct producer_args {
    struct queue *queue;
    double seconds;
};

struct consumer_result {
    unsigned long long dropped;
    unsigned long checksum;
};

__attribute__((noinline)) static struct message *produce_message(unsigned long sequence)
{
    struct message *message = malloc(sizeof(struct message));
    if (message == NULL)
        abort();
    message->next = NULL;
    message->sequence = sequence;
    memset(message->payload, (int)(sequence & 0xff), sizeof(message->payload));
    return message;
}

static void queue_push(struct queue *queue, struct message *message)
{
    pthread_mutex_lock(&queue->lock);
    if (queue->tail != NULL)
        queue->tail->next = message;
    else
        queue->head = message;
    queue->tail = message;
    pthread_cond_signal(&queue->ready);
    pthread_mutex_unlock(&queue->lock);
}

/* Returns the oldest message, waiting for one; NULL once the queue is closed and empty. */
static struct message *queue_pop(struct queue *queue)
{
    pthread_mutex_lock(&queue->lock);
    while (queue->head == NULL && !queue->closed)
        pthread_cond_wait(&queue->ready, &queue->lock);
    struct message *message = queue->head;
    if (message != NULL) {
        queue->head = message->next;
        if (queue->head == NULL)
            queue->tail = NULL;
        message->next = NULL;
    }
    pthread_mutex_unlock(&queue->lock);
    return message;
}

static void *producer(void *arg)
{
    struct producer_args *args = arg;
    struct ticker ticker;
    unsigned long sequence = 0;

    ticker_start(&ticker, args->seconds, 1000 * 1000);
    while (ticker_wait(&ticker))
        queue_push(args->queue, produce_message(sequence++));
    pthread_mutex_lock(&args->queue->lock);
    args->queue->closed = 1;
    pthread_cond_signal(&args->queue->ready);
    pthread_mutex_unlock(&args->queue->lock);
    return NULL;
}

static void *consumer(void *arg)
{
    struct queue *queue = arg;
    struct consumer_result *result = calloc(1, sizeof(*result));
    struct message *message;

    if (result == NULL)
        abort();
    while ((message = queue_pop(queue)) != NULL) {
        result->checksum += (unsigned char)message->payload[message->sequence % 16];
        if (message->sequence % 5 == 4) {
            result->dropped++;
            continue;
        }
        free(message);
    }
    return result;
}

int main(int argc, char **argv)
{
    struct queue queue = {.lock = PTHREAD_MUTEX_INITIALIZER, .ready = PTHREAD_COND_INITIALIZER};
    struct producer_args args = {.queue = &queue, .seconds = scenario_seconds(argc, argv)};
    pthread_t producer_thread, consumer_thread;
    void *consumer_output;

    if (pthread_create(&consumer_thread, NULL, consumer, &queue) != 0 ||
        pthread_create(&producer_thread, NULL, producer, &args) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        return 1;
    }
    pthread_join(producer_thread, NULL);
    pthread_join(consumer_thread, &consumer_output);
    struct consumer_result *result = consumer_output;
    SCENARIO_ESCAPE(&result->checksum);
    scenario_summary("thread_leak", "produce_message", result->dropped * sizeof(struct message));
    free(result);
    return 0;
}
