//go:build tools

// Package deps pins the libraries vigd is built on, so that go.mod holds
// them all from the start and parallel work never races on go.mod. It is
// never compiled (build tag "tools").
package deps

import (
	_ "github.com/coreos/go-systemd/v22/daemon"
	_ "github.com/eclipse/paho.mqtt.golang"
	_ "github.com/emersion/go-imap"
	_ "github.com/emersion/go-imap/client"
	_ "github.com/expr-lang/expr"
	_ "github.com/golang-jwt/jwt/v5"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promauto"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/sirupsen/logrus"
	_ "go.bug.st/serial"
	_ "go.etcd.io/bbolt"
	_ "go.uber.org/goleak"
	_ "golang.org/x/time/rate"
	_ "gopkg.in/yaml.v3"
)
