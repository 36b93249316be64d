// Package kinesistest runs a real Kinesis API server for tests: kinesalite
// (an npm package, installed in test/node of this repository) in its own
// node process, in memory, on 127.0.0.1 and a port the system picks.
//
// Install it once with
//
//	cd test/node && npm ci --omit=optional --ignore-scripts
//
// Without it Start skips the test, unless the environment variable CI is
// set: then a missing kinesalite fails the test.
package kinesistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
)

// Region and the dummy credentials the server accepts (kinesalite checks
// that requests are signed, not by whom).
const (
	Region          = "us-east-1"
	AccessKeyID     = "AKIDFLEETTELEMETRYTEST"
	SecretAccessKey = "fleet-telemetry-test-secret"
)

// launcher starts kinesalite bound to loopback only (its cli.js listens on
// every interface) with streams that become ACTIVE at once, and exits when
// its stdin closes so that it never outlives the test process.
const launcher = `
const kinesalite = require('kinesalite');
const server = kinesalite({createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 1000});
server.listen(0, '127.0.0.1', () => { console.log('kinesalite listening on ' + server.address().port); });
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
`

// Server is a running kinesalite.
type Server struct {
	// Endpoint is the server's base URL, e.g. http://127.0.0.1:40123.
	Endpoint string
	// Client talks to it with aws-sdk-go-v2.
	Client *awskinesis.Client

	mu     sync.Mutex
	output []string
}

// NodeDir is the folder holding package.json and node_modules: test/node
// under the module root (found by walking up from the working directory to
// go.mod).
func NodeDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "test", "node"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("kinesistest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// unavailable skips the test, or fails it under CI (e2e.UnderCI), where
// .ci/run installs kinesalite.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	e2e.Unavailable(t, format, args...)
}

// Start runs kinesalite for the duration of the test.
func Start(t testing.TB) *Server {
	t.Helper()
	nodeDir, err := NodeDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "kinesalite", "package.json")); err != nil {
		unavailable(t, "kinesalite is not installed (run `npm ci --omit=optional --ignore-scripts` in %s)", nodeDir)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable(t, "node is not installed: %v", err)
	}
	cmd := exec.Command(node, "-e", launcher)
	cmd.Dir = nodeDir
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout // one pipe for both: the output shows in failures
	if err := cmd.Start(); err != nil {
		t.Fatalf("start kinesalite: %v", err)
	}
	s := &Server{}
	exited := make(chan struct{})
	port := make(chan string, 1)
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.output = append(s.output, line)
			s.mu.Unlock()
			if p, ok := strings.CutPrefix(line, "kinesalite listening on "); ok {
				port <- p
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	select {
	case p := <-port:
		s.Endpoint = "http://127.0.0.1:" + p
	case <-exited:
		t.Fatalf("kinesalite exited before listening:\n%s", s.Output())
	case <-time.After(30 * time.Second):
		t.Fatalf("kinesalite did not listen within 30s:\n%s", s.Output())
	}
	s.Client = NewClient(s.Endpoint)
	return s
}

// NewClient returns an aws-sdk-go-v2 Kinesis client for endpoint with the
// test credentials.
func NewClient(endpoint string) *awskinesis.Client {
	return awskinesis.New(awskinesis.Options{
		Region:       Region,
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, ""),
	})
}

// Output is what kinesalite printed so far.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.output, "\n")
}

// SetEnv points AWS clients built from the environment (the sink, the
// daemon) at the test credentials and region, and keeps them off the EC2
// metadata service.
func SetEnv(t testing.TB) {
	t.Helper()
	t.Setenv("AWS_REGION", Region)
	t.Setenv("AWS_ACCESS_KEY_ID", AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", SecretAccessKey)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
}

// CreateStream creates a stream with the given number of shards and waits
// until it is ACTIVE.
func (s *Server) CreateStream(t testing.TB, name string, shards int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := s.Client.CreateStream(ctx, &awskinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(shards)}); err != nil {
		t.Fatalf("CreateStream %s: %v", name, err)
	}
	for {
		out, err := s.Client.DescribeStreamSummary(ctx, &awskinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		if err != nil {
			t.Fatalf("DescribeStreamSummary %s: %v", name, err)
		}
		if out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("stream %s not ACTIVE: %v", name, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// ReadAll reads every record of a stream from the start of each shard.
func (s *Server) ReadAll(t testing.TB, stream string) []types.Record {
	t.Helper()
	recs, err := s.readAll(stream)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func (s *Server) readAll(stream string) ([]types.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shards, err := s.Client.ListShards(ctx, &awskinesis.ListShardsInput{StreamName: aws.String(stream)})
	if err != nil {
		return nil, fmt.Errorf("ListShards %s: %w", stream, err)
	}
	var all []types.Record
	for _, sh := range shards.Shards {
		it, err := s.Client.GetShardIterator(ctx, &awskinesis.GetShardIteratorInput{
			StreamName: aws.String(stream), ShardId: sh.ShardId, ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
		})
		if err != nil {
			return nil, fmt.Errorf("GetShardIterator %s/%s: %w", stream, aws.ToString(sh.ShardId), err)
		}
		iter := it.ShardIterator
		for iter != nil {
			out, err := s.Client.GetRecords(ctx, &awskinesis.GetRecordsInput{ShardIterator: iter})
			if err != nil {
				return nil, fmt.Errorf("GetRecords %s/%s: %w", stream, aws.ToString(sh.ShardId), err)
			}
			all = append(all, out.Records...)
			if len(out.Records) == 0 {
				break
			}
			iter = out.NextShardIterator
		}
	}
	return all, nil
}
