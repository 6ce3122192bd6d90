/// The master's OpenAPI document, served at `GET /openapi.yaml`. The tests read it
/// from the running server: a Swift test checks that every documented operation is
/// routed and every route documented, and schemathesis fuzzes the service against it.
public enum OpenAPIDocument {
    public static let text = #"""
openapi: 3.0.3
info:
  title: Cistern master
  version: "1"
  description: |
    A stateless HTTP service over a Cistern cluster: tenants with tokens and quotas,
    KV namespaces with batched page I/O and two-phase puts, and files. Every error is
    JSON {"error": {"code", "message"}} with a stable code and a message naming the fix.
    Send `Authorization: Bearer TOKEN`; only the admin tenant manages tenants.
servers:
  - url: /
security:
  - bearer: []
components:
  securitySchemes:
    bearer:
      type: http
      scheme: bearer
  parameters:
    tenant:
      name: tenant
      in: path
      required: true
      schema: {type: string, pattern: "^[a-z0-9_-]{1,32}$"}
    namespace:
      name: namespace
      in: path
      required: true
      schema: {type: string, pattern: "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,30}$"}
    key:
      name: key
      in: path
      required: true
      schema: {type: string, minLength: 1, maxLength: 512}
    path:
      name: path
      in: query
      required: true
      schema: {type: string, pattern: "^/"}
  responses:
    error:
      description: A refusal; the code is stable, the message names the fix.
      content:
        application/json:
          schema: {$ref: "#/components/schemas/Error"}
  schemas:
    Error:
      type: object
      required: [error]
      properties:
        error:
          type: object
          required: [code, message]
          properties:
            code: {type: string}
            message: {type: string}
    Health:
      type: object
      required: [status, routingVersion, storageTargets]
      properties:
        status: {type: string}
        routingVersion: {type: integer, minimum: 0}
        storageTargets: {type: integer, minimum: 0}
    Tenant:
      type: object
      required: [name, quotaBytes, quotaPages, usedBytes, usedPages, namespaces, tokens]
      properties:
        name: {type: string}
        quotaBytes: {type: integer, minimum: 0}
        quotaPages: {type: integer, minimum: 0}
        usedBytes: {type: integer, minimum: 0}
        usedPages: {type: integer, minimum: 0}
        namespaces: {type: array, items: {type: string}}
        tokens: {type: array, items: {type: string}, description: token ids (never the secrets)}
    TenantCreate:
      type: object
      required: [name, quotaBytes, quotaPages]
      properties:
        name: {type: string, pattern: "^[a-z0-9_-]{1,32}$"}
        quotaBytes: {type: integer, minimum: 0}
        quotaPages: {type: integer, minimum: 0}
    Quota:
      type: object
      required: [quotaBytes, quotaPages]
      properties:
        quotaBytes: {type: integer, minimum: 0}
        quotaPages: {type: integer, minimum: 0}
    Namespace:
      type: object
      required: [name, pageBytes, capacityPages, durability]
      properties:
        name: {type: string}
        pageBytes: {type: integer}
        capacityPages: {type: integer}
        durability: {type: string, enum: [cache, durable]}
        usage:
          type: object
          properties:
            confirmedPages: {type: integer}
            reservedPages: {type: integer}
            freeSlots: {type: integer}
            usedSlots: {type: integer}
    NamespaceCreate:
      type: object
      required: [name, pageBytes, capacityPages]
      properties:
        name: {type: string, pattern: "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,30}$"}
        pageBytes: {type: integer, minimum: 0, maximum: 4294967295, description: 512 bytes to 64 MiB}
        capacityPages: {type: integer, minimum: 0, description: "1 to 2^32; its data is spread over min(4, capacityPages) files"}
        durability: {type: string, enum: [cache, durable], default: cache}
    Keys:
      type: object
      required: [keys]
      properties:
        keys: {type: array, items: {type: string}}
    PutResult:
      type: object
      required: [key, outcome]
      properties:
        key: {type: string}
        outcome: {type: string, enum: [stored, existed, full, failed, no_space]}
        detail: {type: string}
    FileStat:
      type: object
      required: [path, type, mode, length, nlink, mtimeNanoseconds]
      properties:
        path: {type: string}
        type: {type: string, enum: [file, directory, symlink]}
        mode: {type: integer}
        length: {type: integer}
        nlink: {type: integer}
        mtimeNanoseconds: {type: integer}
paths:
  /health:
    get:
      summary: Liveness and the routing this master sees
      security: []
      responses:
        "200": {description: serving, content: {application/json: {schema: {$ref: "#/components/schemas/Health"}}}}
  /metrics:
    get:
      summary: Prometheus metrics
      security: []
      responses:
        "200": {description: metrics, content: {text/plain: {schema: {type: string}}}}
  /openapi.yaml:
    get:
      summary: This document
      security: []
      responses:
        "200": {description: the document, content: {application/yaml: {schema: {type: object}}}}
  /v1/whoami:
    get:
      summary: The caller's tenant
      responses:
        "200":
          description: the tenant
          content: {application/json: {schema: {type: object, required: [tenant], properties: {tenant: {type: string}}}}}
        "401": {$ref: "#/components/responses/error"}
  /v1/tenants:
    get:
      summary: Every tenant, the cluster's capacity and the sum of quotas (admin)
      responses:
        "200":
          description: tenants
          content:
            application/json:
              schema:
                type: object
                required: [tenants, capacityBytes, quotaBytesTotal]
                properties:
                  tenants: {type: array, items: {$ref: "#/components/schemas/Tenant"}}
                  capacityBytes: {type: integer}
                  quotaBytesTotal: {type: integer}
        "401": {$ref: "#/components/responses/error"}
        "403": {$ref: "#/components/responses/error"}
    post:
      summary: Create a tenant (admin); quotas may not exceed the cluster's capacity in total
      requestBody:
        required: true
        content: {application/json: {schema: {$ref: "#/components/schemas/TenantCreate"}}}
      responses:
        "201": {description: created, content: {application/json: {schema: {$ref: "#/components/schemas/Tenant"}}}}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "403": {$ref: "#/components/responses/error"}
        "409": {$ref: "#/components/responses/error"}
        "413": {$ref: "#/components/responses/error"}
  /v1/tenants/{tenant}:
    parameters: [{$ref: "#/components/parameters/tenant"}]
    get:
      summary: One tenant (admin, or the tenant itself)
      responses:
        "200": {description: the tenant, content: {application/json: {schema: {$ref: "#/components/schemas/Tenant"}}}}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "403": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
    delete:
      summary: Delete a tenant that owns no namespaces and no files (admin)
      responses:
        "204": {description: deleted}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "403": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
        "409": {$ref: "#/components/responses/error"}
  /v1/tenants/{tenant}/quota:
    parameters: [{$ref: "#/components/parameters/tenant"}]
    put:
      summary: Set a tenant's quota (admin)
      requestBody:
        required: true
        content: {application/json: {schema: {$ref: "#/components/schemas/Quota"}}}
      responses:
        "200": {description: the tenant, content: {application/json: {schema: {$ref: "#/components/schemas/Tenant"}}}}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "403": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
        "409": {$ref: "#/components/responses/error"}
        "413": {$ref: "#/components/responses/error"}
  /v1/tenants/{tenant}/tokens:
    parameters: [{$ref: "#/components/parameters/tenant"}]
    post:
      summary: Issue a token (admin); the secret is shown only in this answer and stored as its SHA-256
      requestBody:
        required: true
        content:
          application/json:
            schema: {type: object, properties: {id: {type: string, minLength: 1, maxLength: 64}}}
      responses:
        "201":
          description: issued
          content:
            application/json:
              schema:
                type: object
                required: [id, tenant, token]
                properties: {id: {type: string}, tenant: {type: string}, token: {type: string}}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "403": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
        "409": {$ref: "#/components/responses/error"}
        "413": {$ref: "#/components/responses/error"}
  /v1/tenants/{tenant}/tokens/{id}:
    parameters:
      - {$ref: "#/components/parameters/tenant"}
      - {name: id, in: path, required: true, schema: {type: string, minLength: 1, maxLength: 64}}
    delete:
      summary: Revoke a token (admin); it stops working at once on every master
      responses:
        "204": {description: revoked}
        "401": {$ref: "#/components/responses/error"}
        "403": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
  /v1/namespaces:
    get:
      summary: The caller's namespaces
      responses:
        "200":
          description: names
          content: {application/json: {schema: {type: object, required: [namespaces], properties: {namespaces: {type: array, items: {type: string}}}}}}
        "401": {$ref: "#/components/responses/error"}
    post:
      summary: Create a namespace; it claims pageBytes x capacityPages bytes and capacityPages pages of the caller's quota
      requestBody:
        required: true
        content: {application/json: {schema: {$ref: "#/components/schemas/NamespaceCreate"}}}
      responses:
        "201": {description: created (or already there with this shape), content: {application/json: {schema: {$ref: "#/components/schemas/Namespace"}}}}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "409": {$ref: "#/components/responses/error"}
        "413": {$ref: "#/components/responses/error"}
        "503": {$ref: "#/components/responses/error"}
  /v1/namespaces/{namespace}:
    parameters: [{$ref: "#/components/parameters/namespace"}]
    get:
      summary: A namespace's shape and usage
      responses:
        "200": {description: the namespace, content: {application/json: {schema: {$ref: "#/components/schemas/Namespace"}}}}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
    delete:
      summary: Delete a namespace; its pages are freed after readers' leases end and its quota claim is released
      responses:
        "204": {description: deleted}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
  /v1/namespaces/{namespace}/pages/{key}:
    parameters: [{$ref: "#/components/parameters/namespace"}, {$ref: "#/components/parameters/key"}]
    put:
      summary: Store one page (at most the namespace's page size)
      requestBody:
        required: true
        content: {application/octet-stream: {schema: {type: string, format: binary}}}
      responses:
        "200": {description: already stored, content: {application/json: {schema: {$ref: "#/components/schemas/PutResult"}}}}
        "201": {description: stored, content: {application/json: {schema: {$ref: "#/components/schemas/PutResult"}}}}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
        "409": {description: no slot free now, content: {application/json: {schema: {$ref: "#/components/schemas/PutResult"}}}}
        "413": {$ref: "#/components/responses/error"}
        "503": {description: not stored, content: {application/json: {schema: {$ref: "#/components/schemas/PutResult"}}}}
        "507": {description: a disk is full, content: {application/json: {schema: {$ref: "#/components/schemas/PutResult"}}}}
    get:
      summary: Read one page
      responses:
        "200": {description: the page, content: {application/octet-stream: {schema: {type: string, format: binary}}}}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
        "503": {$ref: "#/components/responses/error"}
    delete:
      summary: Delete one page
      responses:
        "204": {description: deleted (or absent)}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
  /v1/namespaces/{namespace}/exists:
    parameters: [{$ref: "#/components/parameters/namespace"}]
    post:
      summary: Which keys are stored, and how many from the first in a row
      requestBody:
        required: true
        content: {application/json: {schema: {$ref: "#/components/schemas/Keys"}}}
      responses:
        "200":
          description: presence
          content:
            application/json:
              schema:
                type: object
                required: [present, consecutiveHits]
                properties: {present: {type: array, items: {type: boolean}}, consecutiveHits: {type: integer}}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
        "413": {$ref: "#/components/responses/error"}
  /v1/namespaces/{namespace}/batch/get:
    parameters: [{$ref: "#/components/parameters/namespace"}]
    post:
      summary: Read pages; the answer is records of (u32 LE key length, key, u32 LE page length or 0xFFFFFFFF when missing, page)
      requestBody:
        required: true
        content: {application/json: {schema: {$ref: "#/components/schemas/Keys"}}}
      responses:
        "200": {description: framed pages, content: {application/octet-stream: {schema: {type: string, format: binary}}}}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
        "413": {$ref: "#/components/responses/error"}
        "503": {$ref: "#/components/responses/error"}
  /v1/namespaces/{namespace}/batch/put:
    parameters: [{$ref: "#/components/parameters/namespace"}]
    post:
      summary: Store pages; the body is records of (u32 LE key length, key, u32 LE page length, page)
      requestBody:
        required: true
        content: {application/octet-stream: {schema: {type: string, format: binary}}}
      responses:
        "200":
          description: one result per page
          content: {application/json: {schema: {type: object, required: [results], properties: {results: {type: array, items: {$ref: "#/components/schemas/PutResult"}}}}}}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
        "413": {$ref: "#/components/responses/error"}
  /v1/namespaces/{namespace}/batch/delete:
    parameters: [{$ref: "#/components/parameters/namespace"}]
    post:
      summary: Delete pages
      requestBody:
        required: true
        content: {application/json: {schema: {$ref: "#/components/schemas/Keys"}}}
      responses:
        "200":
          description: how many were deleted
          content: {application/json: {schema: {type: object, required: [deleted], properties: {deleted: {type: integer}}}}}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
        "413": {$ref: "#/components/responses/error"}
  /v1/namespaces/{namespace}/reserve:
    parameters: [{$ref: "#/components/parameters/namespace"}]
    post:
      summary: Reserve a slot per key for engines that write pages directly, then confirm or abort
      requestBody:
        required: true
        content: {application/json: {schema: {$ref: "#/components/schemas/Keys"}}}
      responses:
        "200":
          description: one reservation per key
          content:
            application/json:
              schema:
                type: object
                required: [pageBytes, reservations]
                properties:
                  pageBytes: {type: integer}
                  reservations:
                    type: array
                    items:
                      type: object
                      required: [key, outcome]
                      properties:
                        key: {type: string}
                        outcome: {type: string, enum: [reserved, exists, full]}
                        slot: {type: integer}
                        token: {type: integer}
                        fileInode: {type: integer}
                        offsetBytes: {type: integer}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
        "413": {$ref: "#/components/responses/error"}
  /v1/namespaces/{namespace}/confirm:
    parameters: [{$ref: "#/components/parameters/namespace"}]
    post:
      summary: Make reserved pages visible (length and CRC32C of what was written)
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [items]
              properties:
                items:
                  type: array
                  items:
                    type: object
                    required: [key, slot, token, length, checksum]
                    properties:
                      key: {type: string}
                      slot: {type: integer, minimum: 0}
                      token: {type: integer, minimum: 0}
                      length: {type: integer, minimum: 0, maximum: 4294967295}
                      checksum: {type: integer, minimum: 0, maximum: 4294967295}
      responses:
        "200":
          description: one outcome per item
          content: {application/json: {schema: {type: object, required: [outcomes], properties: {outcomes: {type: array, items: {type: string}}}}}}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
        "413": {$ref: "#/components/responses/error"}
  /v1/namespaces/{namespace}/abort:
    parameters: [{$ref: "#/components/parameters/namespace"}]
    post:
      summary: Give reserved slots back
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [items]
              properties:
                items:
                  type: array
                  items:
                    type: object
                    required: [slot, token]
                    properties: {slot: {type: integer, minimum: 0}, token: {type: integer, minimum: 0}}
      responses:
        "204": {description: aborted}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
        "413": {$ref: "#/components/responses/error"}
  /v1/files:
    post:
      summary: Create a file or a directory under the caller's folder
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [path, type]
              properties:
                path: {type: string}
                type: {type: string, enum: [file, directory]}
                mode: {type: integer, minimum: 0, maximum: 4095}
      responses:
        "201": {description: created, content: {application/json: {schema: {$ref: "#/components/schemas/FileStat"}}}}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
        "409": {$ref: "#/components/responses/error"}
        "413": {$ref: "#/components/responses/error"}
    delete:
      summary: Delete a file or a directory (recursive=true for a non-empty one)
      parameters:
        - {$ref: "#/components/parameters/path"}
        - {name: recursive, in: query, required: false, schema: {type: string, enum: ["true", "false"]}}
      responses:
        "204": {description: deleted}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
        "409": {$ref: "#/components/responses/error"}
  /v1/files/stat:
    get:
      summary: A file's or directory's attributes
      parameters: [{$ref: "#/components/parameters/path"}]
      responses:
        "200": {description: attributes, content: {application/json: {schema: {$ref: "#/components/schemas/FileStat"}}}}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
        "409": {$ref: "#/components/responses/error"}
  /v1/files/list:
    get:
      summary: A directory's entries
      parameters: [{$ref: "#/components/parameters/path"}]
      responses:
        "200":
          description: entries
          content:
            application/json:
              schema:
                type: object
                required: [path, entries]
                properties:
                  path: {type: string}
                  entries:
                    type: array
                    items: {type: object, required: [name, type], properties: {name: {type: string}, type: {type: string}}}
        "400": {$ref: "#/components/responses/error"}
        "401": {$ref: "#/components/responses/error"}
        "404": {$ref: "#/components/responses/error"}
        "409": {$ref: "#/components/responses/error"}
"""#
}
