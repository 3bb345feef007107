//go:build !unix

package queue

import "errors"

// statFS is not available: the free-space floor is off (vigd runs on Linux).
func statFS(string) (int64, int64, error) { return 0, 0, errors.ErrUnsupported }
