package brokertest

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
)

// debianPython is Debian's interpreter, which python3-zmq installs into
// (a python3 earlier on PATH may be another one without it).
const debianPython = "/usr/bin/python3"

// zmqSubScript is an independent ZeroMQ subscriber on libzmq (pyzmq): it
// connects a SUB socket to argv[1], subscribes to every prefix in
// argv[2:] (all messages when none), says it is ready, and prints every
// multipart message as one JSON line of base64 frames.
const zmqSubScript = `import base64, json, sys
import zmq
ctx = zmq.Context()
s = ctx.socket(zmq.SUB)
s.connect(sys.argv[1])
for p in (sys.argv[2:] or [""]):
    s.setsockopt(zmq.SUBSCRIBE, p.encode())
print(json.dumps({"ready": zmq.zmq_version()}), flush=True)
while True:
    frames = s.recv_multipart()
    print(json.dumps({"frames": [base64.b64encode(f).decode() for f in frames]}), flush=True)
`

// ZMQSubscriber is a running python3-zmq subscriber.
type ZMQSubscriber struct {
	mu   sync.Mutex
	msgs [][][]byte
	// LibzmqVersion is the libzmq the subscriber runs on.
	LibzmqVersion string
}

// Messages returns the messages received so far, each as its frames.
func (s *ZMQSubscriber) Messages() [][][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][][]byte(nil), s.msgs...)
}

// StartZMQSubscriber runs Debian's python3 with pyzmq as a SUB socket
// connected to endpoint. A missing python3-zmq skips the test (fails it
// under CI).
func StartZMQSubscriber(t testing.TB, endpoint string, prefixes ...string) *ZMQSubscriber {
	t.Helper()
	if err := exec.Command(debianPython, "-c", "import zmq").Run(); err != nil {
		e2e.Unavailable(t, "%s cannot import zmq (Debian package python3-zmq): %v", debianPython, err)
	}
	script := filepath.Join(t.TempDir(), "zmq_sub.py")
	if err := os.WriteFile(script, []byte(zmqSubScript), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(debianPython, append([]string{script, endpoint}, prefixes...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	s := &ZMQSubscriber{}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var line struct {
				Ready  string   `json:"ready"`
				Frames []string `json:"frames"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			if line.Ready != "" {
				ready <- line.Ready
				continue
			}
			frames := make([][]byte, len(line.Frames))
			for i, f := range line.Frames {
				frames[i], _ = base64.StdEncoding.DecodeString(f)
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, frames)
			s.mu.Unlock()
		}
	}()
	select {
	case s.LibzmqVersion = <-ready:
	case <-time.After(15 * time.Second):
		t.Fatal("the python3-zmq subscriber did not start within 15s")
	}
	return s
}

// Join calls probe(0), probe(1), … every 50 ms until the subscriber holds
// a message: a SUB socket receives only once its subscription reached the
// PUB (ZeroMQ's "slow joiner"), and what is published before is lost to
// it. It returns how many messages the subscriber holds once the probes
// still in flight arrived (100 ms later), and false when none came within
// timeout.
func (s *ZMQSubscriber) Join(timeout time.Duration, probe func(i int)) (held int, ok bool) {
	deadline := time.Now().Add(timeout)
	for i := 0; len(s.Messages()) == 0; i++ {
		if time.Now().After(deadline) {
			return 0, false
		}
		probe(i)
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	return len(s.Messages()), true
}
