package scenarios

import "context"

// sleepStep waits for the step's duration.
func (r *runner) sleepStep(ctx context.Context, label string, st *Step) error {
	r.printf("%s sleep %s\n", label, st.sleep)
	return sleep(ctx, st.sleep)
}
