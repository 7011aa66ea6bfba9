// Package intake carries messages from the broker's goroutine to the
// consuming gateway's own loop: a broker handler only copies the message
// and queues it, and the loop decodes it and writes what must be durable.
// One queue per gateway keeps the order in which messages were published.
package intake

import "bytes"

// Message is one broker message on its way to the loop.
type Message struct {
	handle  func(topic string, payload []byte)
	topic   string
	payload []byte // a copy: the broker's is not kept after its handler returns
}

// Queue is a gateway's bounded queue of broker messages.
type Queue chan Message

// New makes a queue that holds at most size messages.
func New(size int) Queue { return make(Queue, size) }

// Offer queues a copy of the message for handle, and reports false without
// queueing when the queue is full.
func (q Queue) Offer(handle func(string, []byte), topic string, payload []byte) bool {
	select {
	case q <- Message{handle: handle, topic: topic, payload: bytes.Clone(payload)}:
		return true
	default:
		return false
	}
}

// Wait queues a copy of the message for handle, waiting for room until
// stop is closed (then it reports false).
func (q Queue) Wait(handle func(string, []byte), topic string, payload []byte, stop <-chan struct{}) bool {
	select {
	case q <- Message{handle: handle, topic: topic, payload: bytes.Clone(payload)}:
		return true
	case <-stop:
		return false
	}
}

// Start runs the loop that hands each queued message, in order, to its
// handler. The function it returns stops the loop once it has handled what
// is still queued, and waits for it.
func (q Queue) Start() (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case m := <-q:
				m.handle(m.topic, m.payload)
			case <-quit:
				for {
					select {
					case m := <-q:
						m.handle(m.topic, m.payload)
					default:
						return
					}
				}
			}
		}
	}()
	return func() { close(quit); <-done }
}
