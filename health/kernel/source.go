package kernel

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
)

// ErrRecordsLost is returned (wrapped) by Source.Next when the kernel's ring
// buffer overwrote records before they were read. The source stays usable:
// the next call returns the oldest record still in the ring.
var ErrRecordsLost = errors.New("kmsg records overwritten before they were read")

// Source yields raw kmsg records, one per call, in sequence order.
//
// Next blocks until a record arrives. It returns an error wrapping
// ErrRecordsLost when records were lost (the source stays usable), io.EOF
// when the source is finished (a file fed by a test), or another error when
// the source failed. Close releases the source and makes a blocked Next
// return; it may be called from another goroutine, and more than once.
type Source interface {
	Next() ([]byte, error)
	Close() error
}

// readBufSize is one read's buffer. /dev/kmsg returns EINVAL when a record
// does not fit; 8 KiB is the kernel's CONSOLE_EXT_LOG_MAX, the largest
// record with its dictionary.
const readBufSize = 8 << 10

// Open opens path as a Source: the kernel's record device when path is a
// character device (/dev/kmsg), otherwise a stream of kmsg-format lines (a
// file, FIFO or pipe), where lines starting with a space are the dictionary
// of the record above them.
func Open(path string) (Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening kmsg source %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat kmsg source %s: %w", path, err)
	}
	if st.Mode()&os.ModeCharDevice != 0 {
		return &DeviceSource{f: f, buf: make([]byte, readBufSize)}, nil
	}
	return NewStreamSource(f), nil
}

// DeviceSource reads /dev/kmsg, where each read(2) returns one record.
// Go's runtime poller owns the descriptor (the device supports poll), so a
// blocked read wakes when Close is called.
type DeviceSource struct {
	f   *os.File
	buf []byte
}

// SeekEnd positions the source after the newest record, so that Next
// returns only records logged from now on.
func (s *DeviceSource) SeekEnd() error {
	if _, err := s.f.Seek(0, io.SeekEnd); err != nil {
		return fmt.Errorf("seeking %s to its end: %w", s.f.Name(), err)
	}
	return nil
}

// Next returns the next record. The slice is valid until the next call.
func (s *DeviceSource) Next() ([]byte, error) {
	n, err := s.f.Read(s.buf)
	if err != nil {
		if errors.Is(err, syscall.EPIPE) {
			return nil, fmt.Errorf("reading %s: %w", s.f.Name(), ErrRecordsLost)
		}
		return nil, fmt.Errorf("reading %s: %w", s.f.Name(), err)
	}
	if n == 0 {
		return nil, io.EOF
	}
	return s.buf[:n], nil
}

// Close closes the device.
func (s *DeviceSource) Close() error {
	if err := s.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("closing %s: %w", s.f.Name(), err)
	}
	return nil
}

// StreamSource splits a byte stream in kmsg format into records. It reads
// one line ahead to collect a record's dictionary lines, so on a live pipe a
// record is returned when the next one starts or the stream ends.
type StreamSource struct {
	r      *bufio.Reader
	c      io.Closer
	once   sync.Once
	rec    []byte
	next   []byte // the header line read ahead, if any
	long   []byte // a line longer than the read buffer
	closed error
}

// NewStreamSource reads kmsg-format lines from r; Close closes r when it is
// an io.Closer.
func NewStreamSource(r io.Reader) *StreamSource {
	c, _ := r.(io.Closer)
	return &StreamSource{r: bufio.NewReaderSize(r, readBufSize), c: c}
}

// Next returns the next record, with its dictionary lines. The slice is
// valid until the next call.
func (s *StreamSource) Next() ([]byte, error) {
	s.rec = append(s.rec[:0], s.next...)
	s.next = s.next[:0]
	for {
		line, err := s.readLine()
		switch {
		case len(line) == 0:
		case line[0] == '\n':
			// A blank line carries nothing; kmsg never writes one.
		case len(s.rec) > 0 && line[0] != ' ':
			s.next = append(s.next, line...) // the next record's header
			return s.rec, nil
		default:
			s.rec = append(s.rec, line...)
		}
		if err != nil {
			if len(s.rec) > 0 && errors.Is(err, io.EOF) {
				return s.rec, nil
			}
			return nil, err
		}
	}
}

// readLine returns one line, however long; the slice is valid until the
// next read.
func (s *StreamSource) readLine() ([]byte, error) {
	line, err := s.r.ReadSlice('\n')
	if !errors.Is(err, bufio.ErrBufferFull) {
		return line, err
	}
	s.long = append(s.long[:0], line...)
	for errors.Is(err, bufio.ErrBufferFull) {
		line, err = s.r.ReadSlice('\n')
		s.long = append(s.long, line...)
	}
	return s.long, err
}

// Close closes the underlying reader, if it can be closed.
func (s *StreamSource) Close() error {
	s.once.Do(func() {
		if s.c != nil {
			s.closed = s.c.Close()
		}
	})
	return s.closed
}
