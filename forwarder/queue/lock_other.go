//go:build !unix

package queue

import "io"

type noLock struct{}

func (noLock) Close() error { return nil }

// lockDir does nothing where flock is missing; vigd runs on Linux.
func lockDir(string) (io.Closer, error) { return noLock{}, nil }
