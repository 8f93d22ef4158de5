{{ config(unique_key='sop_instance_pseudo_uid') }}
-- depends_on: {{ source('build', 'build_files') }}
-- depends_on: {{ ref('stg_images') }}
-- depends_on: {{ ref('stg_studies') }}
{#- Images with their preview JPEG. The preview was named in Python by the image's
    pseudonym (tasks/pixels/preview.py); the join goes through the same pseudonym map.
    pixel_deid_status: not_needed (triage), cleaned (burned-in text removed and verified by
    OCR; adds 113101 Clean Pixel Data) or withheld (an unresolved burned_in_text error of
    stage pixels: no preview). docs/images-and-privacy.md #}
with images as (
    select * from {{ ref('images') }}
),

{% if is_incremental() -%}
-- the images rebuilt in this build (the same rows as processed.images rebuilt), and those
-- whose preview or withheld state came with this build
changed as (
    select deid_changed.pseudo_uid as sop_instance_pseudo_uid
    from (
        select changed_images.sop_instance_uid
        from {{ ref('stg_images') }} as changed_images
        where {{ study_in_build('changed_images') }}
        union
        select changed_previews.sop_instance_uid
        from {{ ref('stg_previews') }} as changed_previews
        where {{ in_build('changed_previews') }}
        union
        select changed_errors.sop_instance_uid
        from {{ ref('stg_ingest_errors') }} as changed_errors
        where {{ in_build('changed_errors') }}
    ) as changed_uids
    inner join {{ source('deid', 'deid_pseudonyms') }} as deid_changed
        on deid_changed.original = changed_uids.sop_instance_uid
),
{%- endif %}

previews as (
    select
        deid_sop.pseudo_uid as sop_instance_pseudo_uid,
        stg_previews.preview_key,
        stg_previews.preview_bytes,
        stg_previews.preview_width,
        stg_previews.preview_height,
        stg_previews.frame_index as preview_frame_index,
        stg_previews.pixel_deid_status,
        stg_previews.pixel_deid_method,
        stg_previews.ingested_at
    from {{ ref('stg_previews') }} as stg_previews
    left join {{ source('deid', 'deid_pseudonyms') }} as deid_sop
        on deid_sop.original = stg_previews.sop_instance_uid
),

withheld as (
    select
        deid_sop.pseudo_uid as sop_instance_pseudo_uid,
        max(errors.ingested_at) as ingested_at
    from {{ ref('stg_ingest_errors') }} as errors
    inner join {{ source('deid', 'deid_pseudonyms') }} as deid_sop
        on deid_sop.original = errors.sop_instance_uid
    where errors.stage = 'pixels' and errors.reason = 'burned_in_text'
    group by 1
),

joined as (
    select
        images.sop_instance_pseudo_uid,
        images.series_pseudo_uid,
        images.study_pseudo_uid,
        images.sop_class_uid,
        images.pixel_rows,
        images.pixel_columns,
        images.number_of_frames,
        images.photometric_interpretation,
        images.transfer_syntax_uid,
        images.has_pixel_data,
        images.burned_in_annotation,
        case when withheld.sop_instance_pseudo_uid is null then previews.preview_key end as preview_key,
        case when withheld.sop_instance_pseudo_uid is null then previews.preview_bytes end as preview_bytes,
        case when withheld.sop_instance_pseudo_uid is null then previews.preview_width end as preview_width,
        case when withheld.sop_instance_pseudo_uid is null then previews.preview_height end as preview_height,
        case when withheld.sop_instance_pseudo_uid is null then previews.preview_frame_index end as preview_frame_index,
        case when withheld.sop_instance_pseudo_uid is not null then 'withheld' else previews.pixel_deid_status end
            as pixel_deid_status,
        case when withheld.sop_instance_pseudo_uid is null then previews.pixel_deid_method end as pixel_deid_method,
        greatest(
            images.ingested_at,
            coalesce(previews.ingested_at, images.ingested_at),
            coalesce(withheld.ingested_at, images.ingested_at)
        ) as ingested_at,
        images.patient_identity_removed,
        case
            when withheld.sop_instance_pseudo_uid is null and previews.pixel_deid_status = 'cleaned'
                then images.deidentification_method || '; Clean Pixel Data'
            else images.deidentification_method
        end as deidentification_method,
        case
            when withheld.sop_instance_pseudo_uid is null and previews.pixel_deid_status = 'cleaned'
                then images.deidentification_method_codes || chr(92) || '113101'  -- a backslash in either dialect
            else images.deidentification_method_codes
        end as deidentification_method_codes
    from images
    left join previews on images.sop_instance_pseudo_uid = previews.sop_instance_pseudo_uid
    left join withheld on images.sop_instance_pseudo_uid = withheld.sop_instance_pseudo_uid
)

select * from joined
{% if is_incremental() %}
where sop_instance_pseudo_uid in (select sop_instance_pseudo_uid from changed)
{% endif %}
