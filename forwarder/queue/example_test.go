package queue_test

import (
	"context"
	"fmt"
	"os"

	"github.com/vigd/vigd/forwarder/queue"
)

// The pipeline appends; the forwarder reads a batch, sends it, commits.
func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "queue-example")
	defer os.RemoveAll(dir)
	q, err := queue.Open(dir, queue.Options{Name: "main", MaxBytes: 64 << 20, Policy: queue.DropOldest})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer q.Close()

	ctx := context.Background()
	_ = q.Append(ctx, queue.Record{Kind: queue.Observation, DeviceID: "pump-7", Ref: "ds-1", Body: []byte(`{"result":3.2}`)})
	_ = q.Append(ctx, queue.Record{Kind: queue.Alarm, DeviceID: "pump-7", Ref: "thing-7", Body: []byte(`{"code":"dry"}`)})

	batch, _ := q.Read(q.Cursor(), 100, 1<<20)
	for _, e := range batch {
		fmt.Println(e.Rec.Kind, e.Rec.DeviceID, string(e.Rec.Body))
	}
	// After the server took the batch:
	_ = q.Commit(batch[len(batch)-1].Next)
	fmt.Println("left:", q.Stats().Records)
	// Output:
	// observation pump-7 {"result":3.2}
	// alarm pump-7 {"code":"dry"}
	// left: 0
}
