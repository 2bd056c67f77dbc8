"""Provider emulator: the Gmail API and Microsoft Graph mail over real HTTP, for tests and demos.

Not part of the product path: only tests, the CLI's emulator/demo commands and benchmarks use it.
Exports `create_app`, `EmulatorConfig`, `serve`, `running_emulator` and `EmulatorHandle`.

Provider surface (see /work/shared/providers.md)::

    POST /oauth2/token                      form grant_type=refresh_token, refresh_token,
                                            client_id, client_secret -> {access_token, expires_in,
                                            token_type}; 400 invalid_grant once revoked
    /gmail/v1/users/{me|address}/           watch, stop, profile, history, messages,
                                            messages/{id}
    /v1.0/subscriptions[/{id}[/reauthorize]]   POST (validation handshake) / PATCH / DELETE
    /v1.0/users/{id}/mailFolders/{folder}/messages/delta   (and /v1.0/me/...)

Every API call needs `Authorization: Bearer <access_token>`; the token names the mailbox.

Control API (JSON; unknown keys are rejected with 422; unknown mailbox -> 404 {"error"})::

    POST   /_emulator/reset                         -> 204; forget everything
    GET    /_emulator/push                          -> push settings
    PUT    /_emulator/push      {"gmail_push_url"?, "gmail_push_audience"?,
                                 "service_account_email"?}  (omitted fields keep their value)
    GET    /_emulator/oauth2/v3/certs               -> JWKS verifying the push OIDC tokens
    POST   /_emulator/mailboxes {"provider": "gmail"|"outlook", "address"}
                                -> 201 {address, provider, client_id, client_secret,
                                        refresh_token}
    GET    /_emulator/mailboxes/{address}           -> {address, provider, revoked, history_id,
                                 history_floor, delta_epoch, watch, subscriptions,
                                 messages: [{id, thread_id, labels, subject, sender, folder,
                                             is_read, received_ms, history_id}]}
    POST   /_emulator/mailboxes/{address}/messages  {"id"?, "thread_id"?, "labels"?
                                 (default ["INBOX","UNREAD"]), "subject"?, "sender"?, "body"?,
                                 "folder"? (default "inbox"), "received_ms"?} -> 201 message
    DELETE /_emulator/mailboxes/{address}/messages/{id}          -> 204
    POST   /_emulator/mailboxes/{address}/messages/{id}/labels {"add": [], "remove": []}
                                 -> message (Graph: non-system labels are categories,
                                    isRead = no UNREAD label)
    POST   /_emulator/mailboxes/{address}/expire-history   -> {"history_floor"}; older
                                 startHistoryId answers 404
    POST   /_emulator/mailboxes/{address}/invalidate-delta -> {"delta_epoch"}; old delta and
                                 skip tokens answer 410 (or 400 syncStateNotFound)
    POST   /_emulator/mailboxes/{address}/revoke           -> grant revoked
    POST   /_emulator/mailboxes/{address}/expire-tokens    -> access tokens expire now
    POST   /_emulator/mailboxes/{address}/expire-watch     -> Gmail watch runs out now
    GET    /_emulator/mailboxes/{address}/faults
    PUT    /_emulator/mailboxes/{address}/faults  (replaces all; {} clears; count: N|"always")
        {"throttle_429": {"count": 1, "retry_after": 1.0},  # seconds, the header's raw
                                                            # text, or null for none
         "quota_403": {"reason": "userRateLimitExceeded"|"rateLimitExceeded"|
                       "dailyLimitExceeded"|"insufficientPermissions", "count": 1,
                       "retry_after": null},
         "server_error": {"status": 500..599, "count": 1, "retry_after": null},
         "token_error": {"status": 500..599, "count": 1, "retry_after": null},  # token endpoint
         "timeout": {"count": 1, "seconds": 30.0},         # sleeps, then 504
         "slow_ms": 0,                                      # delay every answer
         "stale_cursor": {"count": 1},                      # history 404 / delta stale
         "drop_notifications": {"count": N} | {"probability": 0.5},
         "duplicate_notifications": false}
    GET    /_emulator/mailboxes/{address}/stats   -> {requests: {endpoint: n},
                                 responses: {endpoint: {status: n}}, notifications_sent,
                                 notifications_dropped, deliveries: [{kind, url, status, error,
                                 duration_ms, at}]}  (kind: gmail_push, graph_change,
                                 graph_lifecycle, graph_validation)
    DELETE /_emulator/mailboxes/{address}/stats   -> 204; zero the counters
    POST   /_emulator/subscriptions/{id}/lifecycle {"event": "reauthorizationRequired"|
                                 "subscriptionRemoved"|"missed"} -> 202 (subscriptionRemoved
                                 also deletes it)
    POST   /_emulator/subscriptions/{id}/expire   -> the subscription runs out now
    POST   /_emulator/mailboxes/{address}/burst {"count": N} -> N notifications at once about
           the newest message (Gmail past its 1/s limit): a redelivery storm

Faults apply to Gmail/Graph API calls after authentication, in the order timeout, throttle_429,
quota_403, server_error (one per request); slow_ms delays every answer. Endpoint names in stats:
oauth.token, gmail.watch, gmail.stop, gmail.profile, gmail.history.list, gmail.messages.list,
gmail.messages.get, graph.subscriptions.{create,get,update,reauthorize,delete},
graph.messages.delta.

Gmail pushes go only to mailboxes with a live watch (honouring its labelIds filter), at most one
per `gmail_push_min_interval_s` per mailbox (later changes coalesce into it), signed RS256 by the
emulator's key. Graph change notifications go to every live subscription whose changeType
matches. Deliveries are not retried.
"""

from providers.emulator.app import create_app
from providers.emulator.config import EmulatorConfig
from providers.emulator.runner import EmulatorHandle, running_emulator, serve

__all__ = ["EmulatorConfig", "EmulatorHandle", "create_app", "running_emulator", "serve"]
