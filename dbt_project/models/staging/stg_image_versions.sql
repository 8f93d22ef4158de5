{{ config(unique_key='version_key') }}
{#- One row per raw images row: which content (content_hash) of a SOP instance came from
    which source key in which batch. Slim, so the conflicts view and the resolution of
    ingest errors look at every version without reading the lake again. Holds UIDs and
    source keys (internal). #}
with source as (
    select * from {{ raw_rows('images') }}
),

versions as (
    select
        coalesce({{ raw_column('SOPInstanceUID') }}, '') || '|' || coalesce(content_hash, '') || '|' || source_key || '|' || batch_id as version_key,
        {{ raw_column('SOPInstanceUID') }} as sop_instance_uid,
        content_hash,
        source_key,
        batch_id,
        ingested_at
    from source
)

select *
from versions
qualify row_number() over (partition by version_key order by ingested_at desc) = 1
