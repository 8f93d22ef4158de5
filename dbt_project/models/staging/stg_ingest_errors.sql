with source as (
    select * from {{ source('raw', 'ingest_errors') }}
),

renamed as (
    select
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

deduplicated as (
    select *
    from renamed
    qualify row_number() over (partition by source_key, stage order by ingested_at desc) = 1
),

-- a file requeued after a fix and then extracted later is no longer an error
later_images as (
    select source_key, max(ingested_at) as ingested_at
    from {{ source('raw', 'images') }}
    group by source_key
),

unresolved as (
    select deduplicated.*
    from deduplicated
    left join later_images on deduplicated.source_key = later_images.source_key
    where later_images.ingested_at is null or later_images.ingested_at <= deduplicated.ingested_at
)

select * from unresolved
