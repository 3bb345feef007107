package sim

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"

	"github.com/sirupsen/logrus"

	"golang.org/x/time/rate"
)

// Entity is a thing or datastream as GET /_sim/entities lists it.
type Entity struct {
	SensusID        string `json:"sensusID"`
	IotID           int64  `json:"iotId"`
	DeviceID        string `json:"deviceId"`
	CustomerID      string `json:"customerId"`
	ThingID         int64  `json:"thingId,omitempty"`
	ObservationType string `json:"observationType,omitempty"`
}

func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	s.adminMux().ServeHTTP(w, r)
}

func (s *Server) adminMux() *http.ServeMux {
	s.muxOnce.Do(func() {
		m := http.NewServeMux()
		m.HandleFunc("GET /_sim/health", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		})
		m.HandleFunc("GET /_sim/counts", s.handleCounts)
		m.HandleFunc("GET /_sim/requests", s.handleRequests)
		m.HandleFunc("GET /_sim/records", s.handleRecords)
		m.HandleFunc("GET /_sim/entities", s.handleEntities)
		m.HandleFunc("GET /_sim/faults", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, s.faults.snapshot())
		})
		m.HandleFunc("POST /_sim/faults", s.handleAddFaults)
		m.HandleFunc("DELETE /_sim/faults", func(w http.ResponseWriter, r *http.Request) {
			s.faults.clear()
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		})
		m.HandleFunc("DELETE /_sim/faults/{id}", func(w http.ResponseWriter, r *http.Request) {
			id, _ := strconv.Atoi(r.PathValue("id"))
			if !s.faults.remove(id) {
				adminError(w, http.StatusNotFound, "no fault "+r.PathValue("id"))
				return
			}
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		})
		m.HandleFunc("POST /_sim/reset", s.handleReset)
		s.mux = m
	})
	return s.mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func adminError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func (s *Server) handleCounts(w http.ResponseWriter, r *http.Request) {
	c := s.st.counts()
	s.stats.fill(&c)
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) handleRequests(w http.ResponseWriter, r *http.Request) {
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	writeJSON(w, http.StatusOK, s.stats.requestsSince(since))
}

func (s *Server) handleRecords(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	query := Query{Kind: q.Get("kind"), DeviceID: q.Get("deviceId"), CustomerID: q.Get("customerId"),
		Datastream: q.Get("datastream"), BatchID: q.Get("batchId")}
	if kindPaths[query.Kind] == "" {
		adminError(w, http.StatusBadRequest, fmt.Sprintf("kind %q: must be one of things, datastreams, observations, alarms, raw", query.Kind))
		return
	}
	var err error
	if v := q.Get("after"); v != "" {
		if query.AfterSeq, err = strconv.ParseInt(v, 10, 64); err != nil {
			adminError(w, http.StatusBadRequest, "after: not an integer")
			return
		}
	}
	if v := q.Get("limit"); v != "" {
		if query.Limit, err = strconv.Atoi(v); err != nil {
			adminError(w, http.StatusBadRequest, "limit: not an integer")
			return
		}
	}
	// Stream the array: a drain can leave millions of lines on disk.
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString("[")
	first := true
	err = s.st.scan(query, func(line []byte) error {
		if !first {
			bw.WriteString(",\n")
		}
		first = false
		_, err := bw.Write(line)
		return err
	})
	bw.WriteString("]\n")
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		s.log.WithError(err).Warn("records query failed")
	}
}

func (s *Server) handleEntities(w http.ResponseWriter, r *http.Request) {
	kind := r.URL.Query().Get("kind")
	if kind != Things && kind != Datastreams {
		adminError(w, http.StatusBadRequest, "kind: must be things or datastreams")
		return
	}
	s.st.mu.Lock()
	es := s.st.entitiesOf(kind)
	out := make([]Entity, 0, len(es.bySensus))
	for _, e := range es.bySensus {
		out = append(out, Entity{SensusID: e.SensusID, IotID: e.IotID, DeviceID: e.DeviceID,
			CustomerID: e.CustomerID, ThingID: e.ThingID, ObservationType: e.ObservationType})
	}
	s.st.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].IotID < out[j].IotID })
	writeJSON(w, http.StatusOK, out)
}

// handleAddFaults takes one Fault or an array of them.
func (s *Server) handleAddFaults(w http.ResponseWriter, r *http.Request) {
	var raw json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&raw); err != nil {
		adminError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	var list []Fault
	if len(raw) > 0 && raw[0] == '[' {
		if err := json.Unmarshal(raw, &list); err != nil {
			adminError(w, http.StatusBadRequest, "body: "+err.Error())
			return
		}
	} else {
		var f Fault
		if err := json.Unmarshal(raw, &f); err != nil {
			adminError(w, http.StatusBadRequest, "body: "+err.Error())
			return
		}
		list = []Fault{f}
	}
	ids := []int{}
	for i, f := range list {
		id, err := s.faults.add(f)
		if err != nil {
			adminError(w, http.StatusBadRequest, fmt.Sprintf("faults[%d]: %v", i, err))
			return
		}
		ids = append(ids, id)
		s.log.WithFields(logrus.Fields{"fault": f.Kind, "endpoint": f.Endpoint, "id": id}).Info("fault installed")
	}
	writeJSON(w, http.StatusOK, map[string][]int{"ids": ids})
}

// handleReset clears faults, counters, the request log and rate limiters;
// with ?data=true also every stored record, batch id and entity.
func (s *Server) handleReset(w http.ResponseWriter, r *http.Request) {
	s.faults.clear()
	s.stats.reset()
	s.limMu.Lock()
	s.limiters = map[string]*rate.Limiter{}
	s.limMu.Unlock()
	if v, _ := strconv.ParseBool(r.URL.Query().Get("data")); v {
		if err := s.st.wipe(); err != nil {
			adminError(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	s.log.Info("reset")
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
