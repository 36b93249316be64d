package forwarder

import (
	"errors"

	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// ErrEarlierRecordFailed is the error of a record a sink did not send
// because an earlier record of the same VIN failed in the same batch:
// sending it would put the VIN's records out of order.
var ErrEarlierRecordFailed = errors.New("not sent: an earlier record of the same VIN failed")

var errNoResult = errors.New("the sink reported no result for this record")

// SendInWaves is for sinks whose service may take some records of a
// request and refuse others (Kinesis PutRecords, Pub/Sub publishes), where
// a refused record followed by a taken one of the same VIN would reach
// consumers out of order. It sends batch in waves that hold at most one
// record per VIN — wave k holds each VIN's k-th record — by calling send
// with the batch indices of a wave's records; send reports one error per
// index (nil: confirmed). Once a record of a VIN fails, that VIN's later
// records are not sent (ErrEarlierRecordFailed). So a VIN's confirmed
// records are always the first ones of its records in the batch.
//
// It returns nil when every record was confirmed, else a *BatchError.
func SendInWaves(batch []spool.Record, send func(idx []int) []error) error {
	rank := make(map[string]int, 64)
	var waves [][]int
	for i := range batch {
		k := rank[batch[i].VIN]
		rank[batch[i].VIN] = k + 1
		if k == len(waves) {
			waves = append(waves, nil)
		}
		waves[k] = append(waves[k], i)
	}
	var failed []RecordError
	var stopped map[string]bool
	for _, wave := range waves {
		if len(stopped) > 0 {
			kept := wave[:0]
			for _, i := range wave {
				if stopped[batch[i].VIN] {
					failed = append(failed, RecordError{Index: i, Err: ErrEarlierRecordFailed})
				} else {
					kept = append(kept, i)
				}
			}
			wave = kept
		}
		if len(wave) == 0 {
			continue
		}
		errs := send(wave)
		for j, i := range wave {
			if j < len(errs) && errs[j] == nil {
				continue
			}
			err := errNoResult
			if j < len(errs) {
				err = errs[j]
			}
			failed = append(failed, RecordError{Index: i, Err: err})
			if stopped == nil {
				stopped = map[string]bool{}
			}
			stopped[batch[i].VIN] = true
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return &BatchError{Failed: failed}
}

// Results builds a Send's result from one error per record of batch (nil:
// confirmed) for a sink whose service handles each record on its own
// (pipelined commands, say): it keeps each VIN's confirmed records first
// among its records, by counting a record after a failed one of the same
// VIN as failed too (ErrEarlierRecordFailed), even if the service took it:
// sent again, it may then arrive twice, but never out of order.
func Results(batch []spool.Record, errs []error) error {
	var failed []RecordError
	var stopped map[string]bool
	for i := range batch {
		err := errs[i]
		if err == nil && stopped[batch[i].VIN] {
			err = ErrEarlierRecordFailed
		}
		if err == nil {
			continue
		}
		if stopped == nil {
			stopped = map[string]bool{}
		}
		stopped[batch[i].VIN] = true
		failed = append(failed, RecordError{Index: i, Err: err})
	}
	if len(failed) == 0 {
		return nil
	}
	return &BatchError{Failed: failed}
}
