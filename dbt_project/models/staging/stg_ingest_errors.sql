{{ config(unique_key='error_key', post_hook="delete from {{ this }} where resolved") }}
-- depends_on: {{ source('build', 'build_files') }}
{#- Quarantined files and why: the latest row per source key and stage, unless the file
    has images rows ingested after it (requeued after a fix and extracted). Incremental:
    this build's errors, and the errors held for files this build brought images of;
    rows found resolved are deleted after the insert (post_hook). #}
with source as (
    select * from {{ raw_rows('ingest_errors') }}
),

renamed as (
    select
        source_key || '|' || stage as error_key,
        source_key,
        stage,
        reason,
        detail,
        quarantine_key,
        {{ raw_column("SOPInstanceUID") }} as sop_instance_uid,
        file_size,
        content_hash,
        batch_id,
        ingested_at
    from source
),

candidates as (
    select * from renamed
    {%- if is_incremental() %}
    union all
    select
        error_key, source_key, stage, reason, detail, quarantine_key, sop_instance_uid,
        file_size, content_hash, batch_id, ingested_at
    from {{ this }}
    where error_key in (select error_key from renamed)
        or source_key in (select source_key from {{ ref('stg_image_versions') }} as versions where {{ in_build('versions') }})
    {%- endif %}
),

deduplicated as (
    select *
    from candidates
    qualify row_number() over (partition by error_key order by ingested_at desc) = 1
),

-- a file requeued after a fix and then extracted later is no longer an error
later_images as (
    select source_key, max(ingested_at) as ingested_at
    from {{ ref('stg_image_versions') }}
    where source_key in (select source_key from deduplicated)
    group by source_key
),

checked as (
    select
        deduplicated.*,
        coalesce(later_images.ingested_at > deduplicated.ingested_at, false) as resolved
    from deduplicated
    left join later_images on deduplicated.source_key = later_images.source_key
)

select * from checked
