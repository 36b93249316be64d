package netloop

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"
	"github.com/google/uuid"
	"github.com/panjf2000/gnet/v2"

	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
	"github.com/fleet-telemetry/fleet-telemetry/wsframe"
)

// errRequestLine is returned by parseRequestLine for anything that is not
// "METHOD SP TARGET SP HTTP/1.x".
var errRequestLine = errors.New("malformed HTTP request line")

// parseRequestLine returns the method and path (query stripped) of an HTTP
// request.
func parseRequestLine(req []byte) (method, path []byte, err error) {
	line := req
	if i := bytes.IndexByte(req, '\n'); i >= 0 {
		line = req[:i]
	}
	line = bytes.TrimSuffix(line, []byte("\r"))
	method, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok || len(method) == 0 {
		return nil, nil, errRequestLine
	}
	target, proto, ok := bytes.Cut(rest, []byte(" "))
	if !ok || len(target) == 0 || target[0] != '/' ||
		(string(proto) != "HTTP/1.1" && string(proto) != "HTTP/1.0") {
		return nil, nil, errRequestLine
	}
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		target = target[:i]
	}
	return method, target, nil
}

// handleRequest answers one HTTP request on the mTLS port: GET /status, the
// WebSocket upgrade on /, 400 for anything else.
func (c *conn) handleRequest(req []byte) gnet.Action {
	method, path, err := parseRequestLine(req)
	if err != nil {
		refusedBadRequest.Inc()
		c.writeHTTP(400, "bad request")
		return gnet.Close
	}
	if string(path) == "/status" && string(method) == "GET" {
		statusRequests.Inc()
		c.writeHTTP(200, "mtls ok")
		return gnet.None // keep-alive: the next request may follow
	}
	if string(path) != "/" {
		refusedBadRequest.Inc()
		c.writeHTTP(400, "bad request")
		return gnet.Close
	}
	if c.idErr != nil {
		// The chain verified, but the issuer is no device CA: say so rather
		// than upgrading and dropping as the reference does.
		if errors.Is(c.idErr, ErrExcludedOID) {
			refusedExcludedOID.Inc()
		} else {
			refusedUnknownIssuer.Inc()
		}
		c.srv.log.Info("certificate refused", "remote", c.mc.remote.String(), "err", c.idErr)
		c.writeHTTP(403, "forbidden: "+c.idErr.Error())
		return gnet.Close
	}
	if allow := c.srv.opts.AllowVIN; allow != nil && !allow(c.id.DeviceID) {
		refusedVINNotAllowed.Inc()
		c.srv.log.Info("vehicle not on the allowlist", "vin", c.id.DeviceID, "remote", c.mc.remote.String())
		c.writeHTTP(403, "forbidden: vehicle not allowed")
		return gnet.Close
	}
	u := ws.Upgrader{
		OnHeader: func(key, value []byte) error {
			switch strings.ToLower(string(key)) {
			case "x-txid":
				c.connectionID = string(value)
			case "x-network-interface":
				c.networkInterface = string(value)
			case "version":
				c.clientVersion = string(value)
			}
			return nil
		},
	}
	rw := struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(req), writerFunc(c.writePlain)}
	if _, err := u.Upgrade(rw); err != nil {
		// The upgrader has answered 400 already.
		refusedBadRequest.Inc()
		c.srv.log.Info("websocket upgrade refused", "vin", c.id.DeviceID, "err", err)
		if c.phase < phaseClosing {
			c.phase = phaseClosing
		}
		return gnet.Close
	}
	if c.connectionID == "" {
		c.connectionID = uuid.NewString()
	}
	c.dec = wsframe.NewDecoder(wsframe.Options{
		Role:            wsframe.RoleServer,
		MaxMessageSize:  c.srv.opts.MaxMessageSize,
		DiscardOversize: true,
	})
	c.phase = phaseWebSocket
	if c.srv.opts.IdleTimeout > 0 {
		c.deadline.Store(time.Now().Add(c.srv.opts.IdleTimeout).UnixNano())
	} else {
		c.deadline.Store(0)
	}
	upgradesOK.Inc()
	refNumConnections.Inc()
	c.vinSignals = c.srv.vinSignals[c.id.DeviceID]
	c.publishVehicle(time.Now())
	c.emitConnectivity(pb.ConnectivityEvent_CONNECTED)
	c.srv.log.Debug("vehicle connected", "vin", c.id.DeviceID, "connection_id", c.connectionID,
		"remote", c.mc.remote.String(), "network_interface", c.networkInterface, "version", c.clientVersion)
	return gnet.None
}

// writeHTTP writes a small plain-text response. Errors close the connection.
func (c *conn) writeHTTP(status int, body string) {
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 ")
	b.WriteString(strconv.Itoa(status))
	b.WriteByte(' ')
	b.WriteString(http.StatusText(status))
	b.WriteString("\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ")
	b.WriteString(strconv.Itoa(len(body)))
	if status != 200 {
		b.WriteString("\r\nConnection: close")
	}
	b.WriteString("\r\n\r\n")
	b.WriteString(body)
	_, _ = c.writePlain(b.Bytes())
	if status != 200 && c.phase < phaseClosing {
		c.phase = phaseClosing
	}
}
