// What each role of the console may do (engine/api/principals.py `required_role` is the
// authority; the page only disables what the server would refuse). Pure.

export const ROLE_RANK = { viewer: 0, operator: 1, admin: 2 };

// The least role of each console action.
export const NEEDS = {
  case: 'operator', // acknowledge, assign, note, resolve, reopen
  audit: 'operator', // GET /v1/audit
  redeliver: 'admin', // POST /v1/deliveries/{id}:redeliver
  operators: 'admin', // GET /v1/operators (the assignee list)
};

/** Whether `role` may do `action` (a key of NEEDS); unknown roles may only read. */
export function can(role, action) {
  const needed = NEEDS[action];
  if (needed === undefined) return false;
  return (ROLE_RANK[role] ?? 0) >= ROLE_RANK[needed];
}

/** Why a control is disabled for `role`, for its tooltip; '' when it is not. */
export function whyNot(role, action) {
  return can(role, action) ? '' : `needs the ${NEEDS[action]} role (you are ${role})`;
}
