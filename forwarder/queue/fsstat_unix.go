//go:build unix

package queue

import "syscall"

// statFS returns the bytes an unprivileged process may still allocate on
// the filesystem holding dir, and the filesystem's size.
func statFS(dir string) (avail, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	bs := int64(st.Bsize)
	return int64(st.Bavail) * bs, int64(st.Blocks) * bs, nil
}
