package redfish

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"
)

type session struct {
	id, token, user string
	last            time.Time
}

// sessionStore holds SessionService sessions, bounded: a new session past
// the cap evicts the oldest, so clients that never log out cannot grow it.
type sessionStore struct {
	mu      sync.Mutex
	max     int
	timeout time.Duration
	byToken map[string]*session
	byID    map[string]*session
	order   []string // ids, oldest first
}

func (ss *sessionStore) init(max int, timeout time.Duration) {
	ss.max, ss.timeout = max, timeout
	ss.byToken, ss.byID = map[string]*session{}, map[string]*session{}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (ss *sessionStore) open(user string) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	se := &session{id: randomHex(8), token: randomHex(16), user: user, last: time.Now()}
	ss.byToken[se.token], ss.byID[se.id] = se, se
	ss.order = append(ss.order, se.id)
	for len(ss.order) > ss.max {
		ss.dropLocked(ss.order[0])
	}
	return se
}

func (ss *sessionStore) dropLocked(id string) bool {
	se, ok := ss.byID[id]
	if !ok {
		return false
	}
	delete(ss.byID, id)
	delete(ss.byToken, se.token)
	if i := slices.Index(ss.order, id); i >= 0 {
		ss.order = slices.Delete(ss.order, i, i+1)
	}
	return true
}

func (ss *sessionStore) close(id string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.dropLocked(id)
}

// touch says whether token is an open session, and keeps it open.
func (ss *sessionStore) touch(token string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	se, ok := ss.byToken[token]
	if !ok {
		return false
	}
	now := time.Now()
	if now.Sub(se.last) > ss.timeout {
		ss.dropLocked(se.id)
		return false
	}
	se.last = now
	return true
}

func (ss *sessionStore) get(id string) (session, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	se, ok := ss.byID[id]
	if !ok {
		return session{}, false
	}
	return *se, true
}

func (ss *sessionStore) ids() []string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return slices.Clone(ss.order)
}

const sessionsPath = "/redfish/v1/SessionService/Sessions"

func sessionView(se session) map[string]any {
	v := odata(sessionsPath+"/"+se.id, "#Session.v1_1_0.Session")
	v["Id"] = se.id
	v["Name"] = "User Session"
	v["UserName"] = se.user
	return v
}

func (s *Service) getSessionService(c *call) (*result, *rfError) {
	v := odata("/redfish/v1/SessionService", "#SessionService.v1_1_8.SessionService")
	v["Id"] = "SessionService"
	v["Name"] = "Session Service"
	v["ServiceEnabled"] = true
	v["SessionTimeout"] = int(s.opts.SessionTimeout / time.Second)
	v["Status"] = statusOK
	v["Sessions"] = link(sessionsPath)
	return ok(v)
}

func (s *Service) getSessions(c *call) (*result, *rfError) {
	ids := s.sessions.ids()
	for i, id := range ids {
		ids[i] = sessionsPath + "/" + id
	}
	return ok(collection(sessionsPath, "#SessionCollection.SessionCollection", "Session Collection", ids))
}

// login opens a session: the token comes back in X-Auth-Token, the
// session's URI in Location (DELETE it to log out).
func (s *Service) login(c *call) (*result, *rfError) {
	obj, e := readObject(c, false)
	if e != nil {
		return nil, e
	}
	if e := onlyKeys(obj, "#", "UserName", "Password"); e != nil {
		return nil, e
	}
	var user, pass string
	for _, f := range []struct {
		name string
		dst  *string
	}{{"UserName", &user}, {"Password", &pass}} {
		name, dst := f.name, f.dst
		raw, ok := obj[name]
		if !ok {
			return nil, errorf(http.StatusBadRequest, "PropertyMissing", []string{"#/" + name}, []string{name},
				"The property %s is a required property and must be included in the request.", name)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return nil, propertyType("#/"+name, name, string(raw))
		}
	}
	if c.faults.RefuseCredentials || !s.credentialsOK(user, pass) {
		return nil, errorf(http.StatusUnauthorized, "ResourceAtUriUnauthorized", nil, []string{sessionsPath},
			"While accessing the resource at %s, the service received an authorization error: wrong user name or password.", sessionsPath)
	}
	se := s.sessions.open(user)
	return &result{status: http.StatusCreated, body: sessionView(*se), header: map[string]string{
		"X-Auth-Token": se.token, "Location": sessionsPath + "/" + se.id}}, nil
}

func (s *Service) getSession(c *call) (*result, *rfError) {
	se, found := s.sessions.get(c.r.PathValue("sid"))
	if !found {
		return nil, notFound(c.r.URL.Path)
	}
	return ok(sessionView(se))
}

func (s *Service) logout(c *call) (*result, *rfError) {
	if !s.sessions.close(c.r.PathValue("sid")) {
		return nil, notFound(c.r.URL.Path)
	}
	return noContent()
}
