"""OpenAPI links: which operations take an id from another one's answer (a new account's id,
a task's, a webhook endpoint's, a key's). Clients read them as the API's map; a stateful
schemathesis run (tests/api/test_schemathesis.py) follows them, chaining real resources.

Written as one table, added to the document as it is generated (`add_links`, by the app's
`openapi`: entrypoints/api/app.py)."""
from __future__ import annotations

from typing import Any

TASK_OPERATIONS = [("get", "/v1/tasks/{task_id}"), ("post", "/v1/tasks/{task_id}/cancel"),
                   ("post", "/v1/tasks/{task_id}/erase"), ("post", "/v1/tasks/{task_id}/retry-unknown"),
                   ("get", "/v1/tasks/{task_id}/results"), ("get", "/v1/tasks/{task_id}/unprocessed"),
                   ("delete", "/v1/tasks/{task_id}"), ("get", "/api/get-results/{task_id}")]
ACCOUNT_OPERATIONS = [("get", "/v1/accounts/{account_id}/credits"), ("post", "/v1/accounts/{account_id}/credits"),
                      ("get", "/v1/accounts/{account_id}/history"), ("post", "/v1/accounts/{account_id}/keys"),
                      ("put", "/v1/accounts/{account_id}/retention")]
# an operation that acts for an account named with ?account= (the admin's way)
FOR_ACCOUNT = [("post", "/v1/tasks/single"), ("post", "/v1/tasks/bulk"), ("get", "/v1/tasks"),
               ("post", "/v1/webhooks"), ("get", "/v1/webhooks")]
ENDPOINT_OPERATIONS = [("get", "/v1/webhooks/{endpoint_id}"), ("get", "/v1/webhooks/{endpoint_id}/deliveries"),
                       ("delete", "/v1/webhooks/{endpoint_id}")]

# (method, path, status) of an answer -> [(target operations, {target parameter: JSON pointer in the answer})]
LINKS: dict[tuple[str, str, str], list[tuple[list[tuple[str, str]], dict[str, str]]]] = {
    ("post", "/v1/accounts", "201"): [(ACCOUNT_OPERATIONS, {"path.account_id": "/account"}),
                                      (FOR_ACCOUNT, {"query.account": "/account"})],
    ("post", "/v1/accounts/{account_id}/keys", "201"): [
        ([("delete", "/v1/accounts/{account_id}/keys/{key_id}")],
         {"path.account_id": "/account", "path.key_id": "/key_id"})],
    ("post", "/v1/tasks/single", "200"): [(TASK_OPERATIONS, {"path.task_id": "/task/task_id"})],
    ("post", "/v1/tasks/bulk", "201"): [(TASK_OPERATIONS, {"path.task_id": "/task/task_id"})],
    ("post", "/v1/tasks/{task_id}/retry-unknown", "201"): [(TASK_OPERATIONS, {"path.task_id": "/task/task_id"})],
    ("post", "/api/verify-single", "200"): [(TASK_OPERATIONS, {"path.task_id": "/task_id"})],
    ("post", "/api/verify-bulk", "200"): [(TASK_OPERATIONS, {"path.task_id": "/task_id"})],
    ("post", "/v1/webhooks", "201"): [(ENDPOINT_OPERATIONS, {"path.endpoint_id": "/endpoint_id"})],
}


def add_links(document: dict[str, Any]) -> None:
    paths = document["paths"]
    for (method, path, status), groups in LINKS.items():
        links = paths[path][method]["responses"][status].setdefault("links", {})
        for targets, parameters in groups:
            for target_method, target_path in targets:
                operation_id = paths[target_path][target_method]["operationId"]
                links[operation_id] = {"operationId": operation_id, "parameters": {
                    name: f"$response.body#{pointer}" for name, pointer in parameters.items()}}

