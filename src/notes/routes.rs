//! `/v1/notes`: create, list (cursor pages), read, update and delete the
//! caller's own notes. Each handler takes the owner from the token
//! (`AuthUser`) and passes it to a query that filters by it; the title and
//! body are sealed before they reach SQL and opened only for the owner.

use super::{db, decode_cursor, encode_cursor, note_aad, Note, MAX_NOTES_PER_USER};
use crate::{
    audit::{self, events, AuditEvent, Outcome},
    error::ApiError,
    http::{
        auth::AuthUser,
        extract::{ClientInfo, Json, Path, Query},
        routes::ApiRouter,
        validate,
    },
    rate_limit::policy::Class,
    state::AppState,
    user_keys::UserKey,
};
use axum::{extract::State, http::Method, http::StatusCode, Json as JsonResponse};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use validator::Validate;

pub fn router() -> ApiRouter {
    ApiRouter::new()
        .route(
            Method::POST,
            "/v1/notes",
            "create_note",
            Class::Writes,
            create_note,
        )
        .route(
            Method::GET,
            "/v1/notes",
            "list_notes",
            Class::Reads,
            list_notes,
        )
        .route(
            Method::GET,
            "/v1/notes/{id}",
            "get_note",
            Class::Reads,
            get_note,
        )
        .route(
            Method::PATCH,
            "/v1/notes/{id}",
            "update_note",
            Class::Writes,
            update_note,
        )
        .route(
            Method::DELETE,
            "/v1/notes/{id}",
            "delete_note",
            Class::Writes,
            delete_note,
        )
}

/// The owner is the caller, never a body field: `user_id` (or anything
/// else) in the body is 422 `unknown_field`.
#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateNoteRequest {
    #[validate(
        length(min = 1, max = 200),
        custom(function = "validate::no_control_chars")
    )]
    pub title: String,
    #[validate(
        length(min = 1, max = 10000),
        custom(function = "validate::no_control_chars_but_newline_and_tab")
    )]
    pub body: String,
}

/// A partial update: an absent field is kept, a present one replaced (and
/// sealed again); `null` is refused, a note always has both.
#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct UpdateNoteRequest {
    #[serde(default, deserialize_with = "validate::present")]
    #[validate(
        length(min = 1, max = 200),
        custom(function = "validate::no_control_chars")
    )]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "validate::present")]
    #[validate(
        length(min = 1, max = 10000),
        custom(function = "validate::no_control_chars_but_newline_and_tab")
    )]
    pub body: Option<Option<String>>,
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ListNotesQuery {
    #[validate(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    #[validate(length(min = 1, max = 64))]
    pub cursor: Option<String>,
}

/// One page of the caller's notes, newest first.
#[derive(Serialize)]
pub struct NoteList {
    pub items: Vec<Note>,
    /// The cursor of the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// 409 `too_many_notes`.
pub fn too_many_notes() -> ApiError {
    ApiError::Conflict {
        code: "too_many_notes",
        detail: "This account holds the maximum number of notes. Delete one first.",
    }
}

pub async fn create_note(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientInfo,
    Json(req): Json<CreateNoteRequest>,
) -> Result<(StatusCode, JsonResponse<Note>), ApiError> {
    let now = state.clock.now();
    let note_id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    // The cap, counted under a per-user lock held to commit, so concurrent
    // creations cannot all see room for one more.
    db::lock_owner(&mut tx, auth.user_id).await?;
    if db::count(&mut tx, auth.user_id).await? >= MAX_NOTES_PER_USER {
        return Err(too_many_notes());
    }
    let key = UserKey::of(&state.keys.data, &auth)?;
    let title = key.seal(&note_aad("title", note_id), req.title.as_bytes())?;
    let body = key.seal(&note_aad("body", note_id), req.body.as_bytes())?;
    let row = db::insert(
        &mut tx,
        &db::NewNote {
            note_id,
            user_id: auth.user_id,
            title_ciphertext: &title,
            body_ciphertext: &body,
            now,
        },
    )
    .await?;
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::NOTE_CREATED, Outcome::Success)
            .user(auth.user_id)
            .session(auth.session_id)
            .client(&client)
            .detail("note_id", note_id.to_string()),
    )
    .await?;
    let note = Note::open(&key, row)?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, JsonResponse(note)))
}

pub async fn list_notes(
    State(state): State<AppState>,
    auth: AuthUser,
    Query(q): Query<ListNotesQuery>,
) -> Result<JsonResponse<NoteList>, ApiError> {
    let limit = q.limit.unwrap_or(20);
    let before = q
        .cursor
        .as_deref()
        .map(|c| decode_cursor(&state.keys.blind_index, c))
        .transpose()?;
    let mut conn = state.db.acquire().await?;
    // One more than the page: whether it exists says if there is a next page.
    let mut rows = db::page(&mut conn, auth.user_id, before, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next_cursor = rows
        .last()
        .filter(|_| more)
        .map(|r| encode_cursor(&state.keys.blind_index, r.note_id));
    let key = UserKey::of(&state.keys.data, &auth)?;
    let items = rows
        .into_iter()
        .map(|r| Note::open(&key, r))
        .collect::<Result<_, _>>()?;
    Ok(JsonResponse(NoteList { items, next_cursor }))
}

pub async fn get_note(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<Uuid>,
) -> Result<JsonResponse<Note>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let row = db::get(&mut conn, auth.user_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let key = UserKey::of(&state.keys.data, &auth)?;
    Ok(JsonResponse(Note::open(&key, row)?))
}

pub async fn update_note(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<Uuid>,
    Json(req): Json<UpdateNoteRequest>,
) -> Result<JsonResponse<Note>, ApiError> {
    let cleared = |field: &str| {
        ApiError::invalid_field(
            field,
            "null_not_allowed",
            "A note always has a title and a body; leave the field out to keep it.",
        )
    };
    let title = match req.title {
        Some(None) => return Err(cleared("title")),
        other => other.flatten(),
    };
    let body = match req.body {
        Some(None) => return Err(cleared("body")),
        other => other.flatten(),
    };
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let key = UserKey::of(&state.keys.data, &auth)?;
    // Sealed for this note's id; if the caller has no such note nothing is
    // written and the values are dropped.
    let seal = |column: &'static str, value: Option<String>| {
        value
            .map(|v| key.seal(&note_aad(column, id), v.as_bytes()))
            .transpose()
    };
    let title = seal("title", title)?;
    let body = seal("body", body)?;
    let row = if title.is_none() && body.is_none() {
        db::get(&mut tx, auth.user_id, id).await?
    } else {
        db::update(
            &mut tx,
            auth.user_id,
            id,
            title.as_deref(),
            body.as_deref(),
            now,
        )
        .await?
    }
    .ok_or(ApiError::NotFound)?;
    let note = Note::open(&key, row)?;
    tx.commit().await?;
    Ok(JsonResponse(note))
}

pub async fn delete_note(
    State(state): State<AppState>,
    auth: AuthUser,
    client: ClientInfo,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    if !db::delete(&mut tx, auth.user_id, id).await? {
        return Err(ApiError::NotFound);
    }
    audit::record(
        &mut tx,
        now,
        &AuditEvent::new(events::NOTE_DELETED, Outcome::Success)
            .user(auth.user_id)
            .session(auth.session_id)
            .client(&client)
            .detail("note_id", id.to_string()),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
