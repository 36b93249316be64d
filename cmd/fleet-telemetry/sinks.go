package main

// sinkMetricHelp is the HELP text of the metrics of the sinks in sink_*.go
// (the reference's names, labelled by record_type).
var sinkMetricHelp = map[string]string{
	"mqtt_publish_total":             "MQTT publishes the broker confirmed (QoS 0: written to the connection), by record type.",
	"mqtt_publish_total_bytes":       "JSON payload bytes of the publishes counted in mqtt_publish_total, by record type.",
	"mqtt_err":                       "MQTT publishes that failed, timed out or were refused (a value JSON cannot hold, a topic MQTT forbids), by record type.",
	"redis_publish_total":            "Redis PUBLISH commands Redis answered, by record type.",
	"redis_publish_total_bytes":      "Payload bytes of the publishes counted in redis_publish_total, by record type.",
	"redis_err":                      "Redis commands of the sink that failed (the batch is retried), by record type.",
	"fleet_redis_stream_added_total": "Records the Redis sink appended to a stream (stream mode).",
	"nats_produce_total":             "Records the NATS server confirmed (a flush, or a JetStream PubAck), by record type.",
	"nats_produce_total_bytes":       "Payload bytes of the records counted in nats_produce_total, by record type.",
	"nats_err":                       "NATS publishes, flushes or PubAck waits that failed (the batch is retried), and records refused.",
	"zmq_publish_total":              "Records the ZMQ PUB socket queued (best effort: PUB drops for absent or slow subscribers), by record type.",
	"zmq_publish_total_bytes":        "Bytes (topic and payload frames) of the records counted in zmq_publish_total, by record type.",
	"zmq_err":                        "Records the ZMQ socket failed to queue (the batch is retried), by record type.",
}
