package netloop

import (
	"errors"
	"time"

	"github.com/gobwas/ws"
	"github.com/google/uuid"
	"github.com/panjf2000/gnet/v2"

	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
	"github.com/fleet-telemetry/fleet-telemetry/wsframe"
)

// statusTryAgainLater is WebSocket close 1013 (RFC 6455 registry): shed load,
// the vehicle reconnects and resends what was not acked.
const statusTryAgainLater ws.StatusCode = 1013

// shed closes the connection with 1013 (try again later) after writing the
// replies that may already leave. Records not acked are the vehicle's to
// resend.
func (c *conn) shed(why, reason string) gnet.Action {
	c.srv.log.Warn("shedding connection", "vin", c.id.DeviceID, "reason", reason)
	return c.closeWith(statusTryAgainLater, why)
}

func (c *conn) protocolError(err error) gnet.Action {
	refusedProtocolError.Inc()
	code := ws.StatusProtocolError
	var pe *wsframe.ProtocolError
	if errors.As(err, &pe) {
		code = pe.Code
	}
	c.srv.log.Info("websocket protocol error", "vin", c.id.DeviceID, "err", err)
	return c.closeWith(code, "")
}

// closeWith flushes ready replies, sends a close frame and closes.
func (c *conn) closeWith(code ws.StatusCode, reason string) gnet.Action {
	if c.phase >= phaseClosing {
		return gnet.Close
	}
	_ = c.flush(time.Now())
	if c.phase == phaseClosed {
		return gnet.Close
	}
	frame := wsframe.AppendClose(nil, code, reason)
	_, _ = c.writePlain(frame)
	c.phase = phaseClosing
	return gnet.Close
}

// expire closes a connection whose deadline passed, if it still has.
func (c *conn) expire(now time.Time) gnet.Action {
	c.expired.Store(false)
	if d := c.deadline.Load(); d == 0 || now.UnixNano() <= d {
		return gnet.None
	}
	switch c.phase {
	case phaseHandshake:
		if !c.hsStarted {
			// Its ClientHello never completed: no goroutine ever saw it.
			refusedHandshakeTimeout.Inc()
		}
		// Otherwise the handshake goroutine counts its own timeout; this
		// is the safety net.
		return gnet.Close
	case phaseRequest:
		refusedRequestTimeout.Inc()
		c.srv.log.Info("no upgrade request in time", "vin", c.id.DeviceID, "remote", c.mc.remote.String())
		return gnet.Close
	case phaseWebSocket:
		refusedIdleTimeout.Inc()
		c.srv.log.Info("idle connection closed", "vin", c.id.DeviceID)
		return c.closeWith(ws.StatusGoingAway, "idle")
	}
	return gnet.None
}

// finishForShutdown closes once every record taken has been acked (or its
// commit failed).
func (c *conn) finishForShutdown() gnet.Action {
	if c.phase != phaseWebSocket {
		return gnet.Close
	}
	if c.acks.len() > 0 {
		return gnet.None // a later wake from the committer brings us back
	}
	return c.closeWith(ws.StatusGoingAway, "server shutting down")
}

func (c *conn) onClose(err error) {
	c.closed.Store(true)
	c.withdrawVehicle()
	if c.upgraded {
		refNumConnections.Dec()
		c.srv.log.Debug("vehicle disconnected", "vin", c.id.DeviceID, "connection_id", c.connectionID, "err", err)
		c.emitConnectivity(pb.ConnectivityEvent_DISCONNECTED)
	}
	c.phase = phaseClosed
	c.mc.Close()
	if c.helloBuf != nil {
		c.srv.unchargeHandshake(int64(cap(c.helloBuf)))
		c.helloBuf = nil
	}
	c.rec, c.cipher = nil, nil
	c.plain = nil
	c.book(0)
	c.acks.clear()
	c.dec = nil
}

// emitConnectivity records a connectivity event for this vehicle in the
// spool (when connectivity records are routed). It is not acked to anyone;
// a full spool loses the event, which is counted and logged.
func (c *conn) emitConnectivity(status pb.ConnectivityEvent) {
	if status == pb.ConnectivityEvent_CONNECTED {
		c.upgraded = true
	}
	if !c.srv.opts.Connectivity {
		return
	}
	now := time.Now()
	payload, err := record.NewConnectivity(c.id.DeviceID, c.connectionID, status, now, c.networkInterface)
	if err == nil {
		txid := []byte(uuid.NewString())
		r := spool.Record{ReceivedAtMs: now.UnixMilli(), CreatedAtSec: uint32(now.Unix()), VIN: c.id.DeviceID,
			ClientVersion: c.clientVersion, Topic: []byte(record.TopicConnectivity), TxID: txid, Payload: payload}
		err = c.srv.opts.Spool.Append(&r, nil, 0)
	}
	if err != nil {
		connectivityEventsFailed.Inc()
		c.srv.log.Warn("connectivity event not recorded", "vin", c.id.DeviceID, "status", status.String(), "err", err)
		return
	}
	connectivityEvents.Inc()
}
