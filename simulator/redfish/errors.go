package redfish

import (
	"fmt"
	"net/http"
)

// The Base message registry version our messages cite.
const baseRegistry = "Base.1.8."

// rfError is an answer in the DMTF error shape: error.code, error.message
// and error.@Message.ExtendedInfo, one message per problem.
type rfError struct {
	status  int
	id      string // message id without the registry prefix: "PropertyUnknown"
	message string
	args    []string
	related []string // JSON pointers: "#/Boot/BootSourceOverrideTarget"
}

func (e *rfError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.id, e.message) }

func errorf(status int, id string, related []string, args []string, format string, a ...any) *rfError {
	return &rfError{status: status, id: id, message: fmt.Sprintf(format, a...), args: args, related: related}
}

func (e *rfError) body() map[string]any {
	info := map[string]any{
		"@odata.type": "#Message.v1_1_1.Message",
		"MessageId":   baseRegistry + e.id,
		"Message":     e.message,
		"Severity":    "Warning",
		"Resolution":  resolution(e.status),
	}
	if e.status >= 500 {
		info["Severity"] = "Critical"
	}
	info["MessageSeverity"] = info["Severity"]
	if len(e.args) > 0 {
		info["MessageArgs"] = e.args
	}
	if len(e.related) > 0 {
		info["RelatedProperties"] = e.related
	}
	code := baseRegistry + "GeneralError"
	if e.status < 500 {
		code = baseRegistry + e.id
	}
	return map[string]any{"error": map[string]any{
		"code":                  code,
		"message":               e.message,
		"@Message.ExtendedInfo": []any{info},
	}}
}

func resolution(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "Log in with valid credentials (HTTP Basic or an X-Auth-Token from SessionService)."
	case http.StatusNotFound:
		return "Use a URI the service lists."
	case http.StatusPreconditionFailed:
		return "GET the resource again and send its current ETag in If-Match."
	case http.StatusMethodNotAllowed:
		return "Use a method the resource allows."
	}
	if status >= 500 {
		return "Retry the request."
	}
	return "Correct the request body and resubmit."
}

// Common errors.
func notFound(path string) *rfError {
	return errorf(http.StatusNotFound, "ResourceMissingAtURI", nil, []string{path}, "The resource at the URI %s was not found.", path)
}

func propertyUnknown(ptr, name string) *rfError {
	return errorf(http.StatusBadRequest, "PropertyUnknown", []string{ptr}, []string{name}, "The property %s is not in the list of valid properties for the resource.", name)
}

func propertyType(ptr, name, value string) *rfError {
	return errorf(http.StatusBadRequest, "PropertyValueTypeError", []string{ptr}, []string{value, name}, "The value %s for the property %s is of a different type than the property can accept.", value, name)
}

func propertyNotInList(ptr, name, value string) *rfError {
	return errorf(http.StatusBadRequest, "PropertyValueNotInList", []string{ptr}, []string{value, name}, "The value %s for the property %s is not in the list of acceptable values.", value, name)
}

func malformedJSON(err error) *rfError {
	return errorf(http.StatusBadRequest, "MalformedJSON", nil, nil, "The request body submitted was malformed JSON and could not be parsed by the receiving service: %v.", err)
}

func paramMissing(action, name string) *rfError {
	return errorf(http.StatusBadRequest, "ActionParameterMissing", []string{"#/" + name}, []string{action, name}, "The action %s requires the parameter %s to be present in the request body.", action, name)
}

func paramNotSupported(action, name string) *rfError {
	return errorf(http.StatusBadRequest, "ActionParameterNotSupported", []string{"#/" + name}, []string{name, action}, "The parameter %s for the action %s is not supported on the target resource.", name, action)
}

func paramValueNotInList(action, name, value string) *rfError {
	return errorf(http.StatusBadRequest, "ActionParameterValueNotInList", []string{"#/" + name}, []string{value, name, action}, "The value %s for the parameter %s in the action %s is not in the list of acceptable values.", value, name, action)
}

func paramFormat(action, name, value string) *rfError {
	return errorf(http.StatusBadRequest, "ActionParameterValueFormatError", []string{"#/" + name}, []string{value, name, action}, "The value %s for the parameter %s in the action %s is of a different format than the parameter can accept.", value, name, action)
}

func internal(format string, a ...any) *rfError {
	return errorf(http.StatusInternalServerError, "InternalError", nil, nil, format, a...)
}
