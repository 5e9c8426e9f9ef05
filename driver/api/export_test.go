package api

import "time"

// SetRefusalClock makes the refusal log read now instead of time.Now until
// the returned func is called.
func SetRefusalClock(now func() time.Time) (restore func()) {
	old := refusalNow
	refusalNow = now
	return func() { refusalNow = old }
}

// The hand-written list of column fields, for TestColumnsJSON.
var (
	ColumnsJSON      = columnsJSON
	AppendJSONString = appendJSONString
	ColumnFields     = columnFields
)
